// The "Channels" panel: the layer's mosaic (A), an optional comparison (B)
// with another step or run, hover statistics and click-to-open.

import {ApiError, imageUrl, loadImage} from './api.js';
import {ColorBar, stretchToProbe} from './colorbar.js';
import {el, fmt, setChildren, setOptions} from './dom.js';
import {cellRect, channelAt, nearestIndex} from './geometry.js';

const HOVER_HINT = 'Hover over the mosaic to see a channel; click to open it.';

/** One mosaic image with hover (channel + stats) and click (open channel). */
export class MosaicView {
  constructor({caption, onHover, onPick, maxWidth = 520}) {
    this.maxWidth = maxWidth;
    this.caption = el('figcaption', {class: 'tba-caption'}, caption);
    this.img = el('img', {class: 'tba-mosaic-img', alt: 'activation mosaic', draggable: 'false'});
    this.hoverBox = el('div', {class: 'tba-cellbox tba-hoverbox', hidden: true});
    this.pickBox = el('div', {class: 'tba-cellbox tba-pickbox', hidden: true});
    this.message = el('div', {class: 'tba-message', hidden: true});
    this.wrap = el('div', {class: 'tba-mosaic-wrap', tabindex: 0, role: 'application',
      'aria-label': 'mosaic: arrow keys move between channels, Enter opens one'},
    this.img, this.hoverBox, this.pickBox);
    // Zoom: the mosaic at `zoom` times the fitted size, panned by scrolling.
    this.scroller = el('div', {class: 'tba-mosaic-scroll'}, this.wrap);
    this.root = el('figure', {class: 'tba-figure'}, this.caption, this.scroller, this.message);
    this.layer = null;
    this.zoom = 1;
    this.cursor = null; // channel under the keyboard cursor
    this.wrap.addEventListener('keydown', (e) => {
      if (!this.layer || !this.natural) return;
      const {cols} = this.layer.grid;
      const channels = this.layer.shape[2];
      const moves = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols};
      if (e.key in moves) {
        const next = (this.cursor ?? -moves[e.key]) + moves[e.key];
        this.cursor = Math.max(0, Math.min(channels - 1, next));
        this.placeBox(this.hoverBox, this.cursor);
        onHover(this.cursor, this);
      } else if ((e.key === 'Enter' || e.key === ' ') && this.cursor !== null) {
        onPick(this.cursor, this);
      } else return;
      e.preventDefault();
      e.stopPropagation();
    });
    this.wrap.addEventListener('blur', () => this.placeBox(this.hoverBox, null));
    this.img.addEventListener('mousemove', (e) => {
      const channel = this.eventChannel(e);
      this.placeBox(this.hoverBox, channel);
      onHover(channel, this);
    });
    this.img.addEventListener('mouseleave', () => {
      this.placeBox(this.hoverBox, null);
      onHover(null, this);
    });
    this.img.addEventListener('click', (e) => {
      const channel = this.eventChannel(e);
      if (channel !== null) onPick(channel, this);
    });
  }

  setCaption(text) {
    this.caption.textContent = text;
  }

  /** Shows `text` instead of a mosaic. */
  showMessage(text) {
    this.wrap.hidden = true;
    this.message.hidden = false;
    this.message.textContent = text;
  }

  /** Shows the mosaic of `layer` at `step` for probe `probe`; resolves to the image or null. */
  async show(run, layer, step, probe) {
    this.layer = layer;
    this.run = run;
    this.step = step;
    if (!layer.views.mosaic) {
      this.showMessage('The mosaic view was not logged for this layer.');
      return null;
    }
    const src = imageUrl(run, layer.views.mosaic, step, probe);
    try {
      const img = await loadImage(src);
      if (this.layer !== layer || this.step !== step) return null; // superseded
      // Per-probe scale: the levels stretched to this probe's own range.
      const shown = this.stretch && this.palette ? await stretchToProbe(img, this.palette) : null;
      if (this.layer !== layer || this.step !== step) return null;
      this.range = shown?.range ?? null;
      this.img.src = shown?.src ?? img.src;
      this.img.dataset.layer = layer.layer; // what is on display (read by tests)
      this.img.dataset.step = String(step);
      this.natural = {w: img.naturalWidth, h: img.naturalHeight};
      this.sizeImage();
      this.wrap.hidden = false;
      this.message.hidden = true;
      return img;
    } catch (err) {
      this.showMessage(err instanceof ApiError ? err.message : String(err));
      return null;
    }
  }

  /** Sizes the image: fitted into maxWidth (whole pixels per cell pixel when it can), times zoom. */
  sizeImage() {
    if (!this.natural) return;
    const img = {naturalWidth: this.natural.w, naturalHeight: this.natural.h};
    {
      let scale = Math.floor(this.maxWidth / img.naturalWidth);
      if (scale < 1) scale = this.maxWidth / img.naturalWidth;
      scale = Math.min(scale, 24) * this.zoom;
      this.img.style.width = `${Math.round(img.naturalWidth * scale)}px`;
      this.img.style.height = `${Math.round(img.naturalHeight * scale)}px`;
    }
  }

  /** Zooms by `factor` (1 = fitted), keeping the middle of the view in the middle. */
  setZoom(zoom) {
    const s = this.scroller;
    const cx = (s.scrollLeft + s.clientWidth / 2) / Math.max(1, s.scrollWidth);
    const cy = (s.scrollTop + s.clientHeight / 2) / Math.max(1, s.scrollHeight);
    this.zoom = Math.max(1, Math.min(16, zoom));
    this.sizeImage();
    s.scrollLeft = cx * s.scrollWidth - s.clientWidth / 2;
    s.scrollTop = cy * s.scrollHeight - s.clientHeight / 2;
  }

  eventChannel(event) {
    if (!this.layer || !this.natural) return null;
    const box = this.img.getBoundingClientRect();
    const x = ((event.clientX - box.left) * this.natural.w) / box.width;
    const y = ((event.clientY - box.top) * this.natural.h) / box.height;
    return channelAt(this.layer.grid, this.layer.shape[2], x, y, this.natural.w, this.natural.h);
  }

  placeBox(box, channel) {
    if (channel === null || channel === undefined || !this.layer || !this.natural) {
      box.hidden = true;
      return;
    }
    const r = cellRect(this.layer.grid, channel, this.natural.w, this.natural.h);
    box.style.left = `${(100 * r.x) / this.natural.w}%`;
    box.style.top = `${(100 * r.y) / this.natural.h}%`;
    box.style.width = `${(100 * r.w) / this.natural.w}%`;
    box.style.height = `${(100 * r.h) / this.natural.h}%`;
    box.hidden = false;
  }
}

/** The layer's mosaic, the comparison controls and view, and the hover line. */
export class MosaicPanel {
  constructor(app) {
    this.app = app;
    this.column = 'left';
    this.mosaicA = new MosaicView({
      caption: 'Mosaic',
      onHover: (c, view) => this.showHover(c, view),
      onPick: (c) => app.pickChannel(c),
    });
    this.mosaicB = new MosaicView({
      caption: 'Compare',
      onHover: (c, view) => this.showHover(c, view),
      onPick: (c) => app.pickChannel(c),
    });
    this.mosaicB.root.hidden = true;
    this.colorBar = new ColorBar();
    this.stretchBox = el('input', {type: 'checkbox', id: 'tba-stretch', onchange: () => {
      for (const v of [this.mosaicA, this.mosaicB]) v.stretch = this.stretchBox.checked;
      app.update();
    }});
    const stretchField = el('label', {class: 'tba-field', title: 'Stretch the colours of the mosaic to this ' +
      'probe\'s own range (the stored mosaics share one scale across probes)'},
    this.stretchBox, el('span', {text: 'scale per probe'}));
    this.hover = el('div', {id: 'tba-hover', class: 'tba-hover', 'aria-live': 'polite', text: HOVER_HINT});
    this.compareMode = el('select', {id: 'tba-compare-mode', onchange: () => {
      app.state.compareMode = this.compareMode.value;
      this.updateControls();
      app.update();
    }});
    setOptions(this.compareMode, [['off', 'nothing'], ['step', 'another step'], ['run', 'another run']], 'off');
    this.compareStep = el('select', {id: 'tba-compare-step', hidden: true, onchange: () => {
      app.state.compareStep = Number(this.compareStep.value);
      app.update();
    }});
    this.compareRun = el('select', {id: 'tba-compare-run', hidden: true,
      onchange: () => this.selectCompareRun(this.compareRun.value)});
    const zoomBy = (f) => {
      for (const v of [this.mosaicA, this.mosaicB]) v.setZoom(f === 0 ? 1 : v.zoom * f);
      this.zoomLabel.textContent = `${this.mosaicA.zoom}×`;
    };
    this.zoomLabel = el('span', {id: 'tba-zoom-label', class: 'tba-note', text: '1×'});
    const compareBar = el('div', {class: 'tba-comparebar'},
      el('span', {text: 'Compare with '}), this.compareMode, this.compareStep, this.compareRun,
      el('span', {class: 'tba-zoom'},
        el('button', {type: 'button', id: 'tba-zoom-out', text: '−', title: 'zoom out', 'aria-label': 'zoom out',
          onclick: () => zoomBy(0.5)}),
        this.zoomLabel,
        el('button', {type: 'button', id: 'tba-zoom-in', text: '+', title: 'zoom in (then scroll to pan)',
          'aria-label': 'zoom in', onclick: () => zoomBy(2)}),
        el('button', {type: 'button', id: 'tba-zoom-fit', text: 'fit', title: 'fit the mosaic', onclick: () => zoomBy(0)})));
    this.layerInfo = el('div', {id: 'tba-layer-info', class: 'tba-layer-info'});
    this.compareData = null; // /layers answer for the compare run
    this.root = el('section', {class: 'tba-panel tba-mosaic-panel'},
      el('h3', {text: 'Channels'}), this.layerInfo, compareBar,
      el('div', {class: 'tba-pair'}, this.mosaicA.root, this.mosaicB.root),
      el('div', {class: 'tba-scalebar'}, this.colorBar.root, stretchField), this.hover);
  }

  runChanged() {
    this.updateControls();
  }

  /** Loads the layer's palette (GET /palette) for the colour bar and the per-probe stretch. */
  async loadPalette(run, layer) {
    let palette = null;
    try {
      palette = await this.app.getJson('palette', {run, layer: layer.layer});
    } catch (err) {
      palette = null; // not a palette PNG (another writer): no bar, no stretch
    }
    if (this.app.layer() !== layer) return;
    this.mosaicA.palette = palette;
    this.mosaicB.palette = palette;
    if (palette) this.colorBar.setPalette(palette);
    else this.colorBar.palette = null;
    this.app.update();
  }

  layerChanged(layer) {
    if (this.paletteFor !== `${this.app.state.run}/${layer.layer}`) {
      this.paletteFor = `${this.app.state.run}/${layer.layer}`;
      this.loadPalette(this.app.state.run, layer);
    }
    const [h, w, c] = layer.shape;
    setChildren(this.layerInfo,
      el('span', {text: `#${layer.index} `}), el('strong', {text: layer.layer}),
      el('span', {text: ` ${layer.class_name} · output ${h}×${w}×${c} · ${layer.steps.length} steps kept` +
        (layer.logged_steps.length > layer.steps.length ? ` of ${layer.logged_steps.length} logged` : '')}));
    this.updateControls();
  }

  update(view) {
    const probeName = view.layer.probes[view.probe] ?? String(view.probe);
    this.mosaicA.setCaption(`Mosaic · ${view.run} · step ${view.step} · ${probeName}`);
    const mosaic = this.mosaicA.show(view.run, view.layer, view.step, view.probe);
    view.mosaic = mosaic; // for the panels after this one (the channel panel)
    // The next step's mosaic, for smooth playback.
    const next = view.layer.steps[view.stepIndex + 1];
    if (next !== undefined && view.layer.views.mosaic) {
      loadImage(imageUrl(view.run, view.layer.views.mosaic, next, view.probe)).catch(() => {});
    }
    this.updateCompare(view);
    Promise.all([mosaic, view.stats]).then(([, stats]) => {
      if (!view.isCurrent()) return;
      this.mosaicA.placeBox(this.mosaicA.pickBox, view.channel);
      this.scale = stats.error ? null : stats.scale;
      this.colorBar.show(this.scale, {channel: view.channel,
        stretch: this.mosaicA.stretch ? this.mosaicA.range : null});
    });
  }

  async updateCompare({run, layer, step, probe}) {
    const state = this.app.state;
    const mode = state.compareMode;
    const view = this.mosaicB;
    view.root.hidden = mode === 'off';
    if (mode === 'step') {
      const other = state.compareStep ?? layer.steps[0];
      view.setCaption(`Compare · ${run} · step ${other} (${other - step >= 0 ? '+' : ''}${other - step})`);
      await view.show(run, layer, other, probe);
    } else if (mode === 'run') {
      const otherRun = state.compareRun;
      const otherLayer = this.compareData?.layers.find((l) => l.layer === layer.layer);
      if (otherRun && otherLayer) await this.app.ensureSteps(otherRun, otherLayer);
      if (!otherRun || !otherLayer || !otherLayer.steps.length) {
        view.setCaption('Compare');
        view.showMessage(otherRun
          ? `Run ${otherRun} has no layer ${layer.layer}.`
          : 'There is no other run to compare with.');
        view.layer = null;
        return;
      }
      const otherStep = otherLayer.steps[nearestIndex(otherLayer.steps, step)];
      view.setCaption(`Compare · ${otherRun} · step ${otherStep}`);
      await view.show(otherRun, otherLayer, otherStep, Math.min(probe, otherLayer.probes.length - 1));
    }
    if (!view.root.hidden) view.placeBox(view.pickBox, state.channel);
  }

  async selectCompareRun(run) {
    this.app.state.compareRun = run;
    try {
      this.compareData = await this.app.getJson('layers', {run});
    } catch (err) {
      this.compareData = null;
    }
    this.app.update();
  }

  updateControls() {
    const state = this.app.state;
    const mode = state.compareMode;
    this.compareMode.value = mode;
    this.compareStep.hidden = mode !== 'step';
    this.compareRun.hidden = mode !== 'run';
    const layer = this.app.layer();
    if (mode === 'step' && layer?.steps) {
      setOptions(this.compareStep, layer.steps.map((s) => [String(s), `step ${s}`]),
        String(state.compareStep ?? layer.steps[0]));
      state.compareStep = Number(this.compareStep.value);
    }
    if (mode === 'run') {
      const others = this.app.runs.filter((r) => r !== state.run);
      setOptions(this.compareRun, others.map((r) => [r, r]), state.compareRun);
      if (!others.length) {
        this.compareData = null;
        state.compareRun = null;
      } else if (this.compareRun.value !== state.compareRun || !this.compareData) {
        this.selectCompareRun(this.compareRun.value);
      }
    }
  }

  async showHover(channel, view) {
    const app = this.app;
    if (view === this.mosaicA && Array.isArray(this.scale?.lo)) {
      this.colorBar.show(this.scale, {channel: channel ?? app.state.channel,
        stretch: this.mosaicA.stretch ? this.mosaicA.range : null});
    }
    if (channel === null) {
      this.hover.textContent = app.state.channel === null ? HOVER_HINT : `Channel ${app.state.channel} open.`;
      return;
    }
    const stats = await app.stats(view.run, view.layer.layer, view.step);
    const parts = [`channel ${channel}`];
    if (stats.error) {
      parts.push(`no statistics at step ${view.step} (${stats.error.status === 404 ? 'not kept' : 'error'})`);
    } else {
      const probe = Math.min(app.state.probe, stats.stats.length - 1);
      const [mean, max, min, std] = stats.stats[probe][channel];
      parts.push(`mean ${fmt(mean)}`, `max ${fmt(max)}`, `min ${fmt(min)}`, `std ${fmt(std)}`,
        stats.dead[channel] ? 'dead (0 on every probe)' : 'alive');
    }
    this.hover.textContent = `${parts.join(' · ')}  [${view.run}, step ${view.step}]`;
  }
}
