// The channel panel: one opened channel enlarged, over the probe, and its
// history across steps (the filmstrip).

import {channelUrl, imageUrl, loadImage} from './api.js';
import {el, fmt, setChildren} from './dom.js';
import {cellRect, cropToCanvas} from './geometry.js';

const FILMSTRIP_MAX = 60;

export class ChannelPanel {
  constructor(app) {
    this.app = app;
    this.column = 'left';
    this.title = el('h3', {id: 'tba-channel-title', text: 'Channel'});
    this.stats = el('div', {id: 'tba-channel-stats', class: 'tba-channel-stats'});
    this.cellCanvas = el('canvas', {id: 'tba-channel-cell', class: 'tba-cell', width: 1, height: 1});
    this.overCanvas = el('canvas', {id: 'tba-channel-overlay', class: 'tba-over', width: 1, height: 1});
    this.overCaption = el('figcaption', {class: 'tba-caption'});
    this.filmstrip = el('div', {id: 'tba-filmstrip', class: 'tba-filmstrip'});
    this.filmNote = el('div', {class: 'tba-note'});
    this.root = el('section', {id: 'tba-channel', class: 'tba-panel tba-channel-panel', hidden: true},
      this.title, this.stats,
      el('div', {class: 'tba-pair'},
        el('figure', {class: 'tba-figure'}, el('figcaption', {class: 'tba-caption', text: 'Enlarged'}), this.cellCanvas),
        el('figure', {class: 'tba-figure'}, this.overCaption, this.overCanvas)),
      el('h4', {text: 'History across steps'}), this.filmstrip, this.filmNote);
  }

  async update(view) {
    const {layer, step, probe, channel} = view;
    if (channel === null) {
      this.root.hidden = true;
      return;
    }
    const stats = await view.stats;
    if (!view.isCurrent()) return;
    const mosaic = await view.mosaic;
    if (!view.isCurrent()) return;
    this.root.hidden = false;
    const probeName = layer.probes[probe] ?? String(probe);
    this.title.textContent = `Channel ${channel} of ${layer.layer} · ${probeName} · step ${step}`;
    if (stats.error) {
      this.stats.textContent = stats.error.message;
    } else {
      const [mean, max, min, std] = stats.stats[Math.min(probe, stats.stats.length - 1)][channel];
      this.stats.textContent = `mean ${fmt(mean)} · max ${fmt(max)} · min ${fmt(min)} · std ${fmt(std)} · ` +
        (stats.dead[channel] ? 'dead on every probe' : 'alive');
    }
    if (mosaic) {
      const rect = cellRect(layer.grid, channel, mosaic.naturalWidth, mosaic.naturalHeight);
      cropToCanvas(this.cellCanvas, mosaic, rect);
      const scale = Math.max(1, Math.floor(192 / Math.max(rect.w, rect.h)));
      this.cellCanvas.style.width = `${Math.round(rect.w * scale)}px`;
      this.cellCanvas.style.height = `${Math.round(rect.h * scale)}px`;
      await this.drawOverlay(view, mosaic, rect);
    }
    if (!view.isCurrent()) return;
    this.drawFilmstrip(view);
  }

  /** The channel's map stretched over the probe: over the probe image when logged, else over the overlay view. */
  async drawOverlay({run, layer, step, probe}, mosaic, rect) {
    const g = this.overCanvas.getContext('2d');
    let base = null;
    let region = null;
    const probeImages = this.app.data.probe_images;
    if (probeImages?.tag) {
      const probeStep = probeImages.steps.includes(step) ? step : probeImages.steps[0];
      try {
        base = await loadImage(imageUrl(run, probeImages.tag, probeStep, probe));
        region = {x: 0, y: 0, w: base.naturalWidth, h: base.naturalHeight};
        this.overCaption.textContent = 'Channel over the probe image';
      } catch (err) {
        base = null;
      }
    }
    if (!base && layer.views.overlay) {
      try {
        base = await loadImage(imageUrl(run, layer.views.overlay, step, probe));
        // The overlay view is [strongest channel | mean over channels], `sep` px apart.
        const w = (base.naturalWidth - layer.grid.sep) / 2;
        region = {x: 0, y: 0, w, h: base.naturalHeight};
        this.overCaption.textContent = 'Channel over the probe (probe seen through the overlay view)';
      } catch (err) {
        base = null;
      }
    }
    if (!base) {
      this.overCaption.textContent = 'Channel alone (no probe image kept at this step)';
      region = {x: 0, y: 0, w: rect.w * 8, h: rect.h * 8};
    }
    this.overCanvas.width = Math.round(region.w);
    this.overCanvas.height = Math.round(region.h);
    g.clearRect(0, 0, region.w, region.h);
    if (base) g.drawImage(base, region.x, region.y, region.w, region.h, 0, 0, region.w, region.h);
    g.globalAlpha = base ? 0.6 : 1;
    g.imageSmoothingEnabled = true;
    g.drawImage(mosaic, rect.x, rect.y, rect.w, rect.h, 0, 0, region.w, region.h);
    g.globalAlpha = 1;
    const scale = Math.max(1, Math.floor(192 / Math.max(region.w, region.h)));
    this.overCanvas.style.width = `${Math.round(region.w * scale)}px`;
  }

  async drawFilmstrip(view) {
    const {run, layer, step, probe, channel} = view;
    let steps = layer.steps;
    if (steps.length > FILMSTRIP_MAX) {
      const stride = steps.length / FILMSTRIP_MAX;
      const picked = new Set();
      for (let i = 0; i < FILMSTRIP_MAX; i++) picked.add(steps[Math.floor(i * stride)]);
      picked.add(steps[steps.length - 1]);
      picked.add(step);
      steps = steps.filter((s) => picked.has(s));
      this.filmNote.textContent = `${steps.length} of ${layer.steps.length} kept steps shown.`;
    } else {
      this.filmNote.textContent = '';
    }
    const frames = steps.map((s) => {
      const canvas = el('canvas', {class: 'tba-frame-canvas', width: 1, height: 1});
      const frame = el('button', {type: 'button', class: s === step ? 'tba-frame tba-current' : 'tba-frame',
        title: `step ${s}`, dataset: {step: String(s)}, 'aria-label': `step ${s}`,
        onclick: () => this.app.setStepIndex(layer.steps.indexOf(s))},
      canvas, el('span', {text: String(s)}));
      return {s, canvas, frame};
    });
    setChildren(this.filmstrip, ...frames.map((f) => f.frame));
    if (!layer.views.mosaic || !steps.length) return;
    // One request: the server crops the cell at every step into one strip.
    let strip;
    try {
      strip = await loadImage(channelUrl(run, layer.layer, probe, channel, steps));
    } catch (err) {
      for (const {frame} of frames) {
        frame.classList.add('tba-missing');
        frame.title = `${frame.title}: ${err.message ?? err}`;
      }
      return;
    }
    if (!view.isCurrent()) return;
    const w = strip.naturalWidth / steps.length;
    const h = strip.naturalHeight;
    const missing = new Set(strip.missingSteps);
    frames.forEach(({s, canvas, frame}, i) => {
      if (missing.has(s)) {
        frame.classList.add('tba-missing');
        frame.title = `step ${s}: mosaic not kept`;
        return;
      }
      cropToCanvas(canvas, strip, {x: i * w, y: 0, w, h});
      // Keep the cell's shape: 40 px on its longer side.
      const scale = 40 / Math.max(w, h);
      canvas.style.width = `${Math.max(1, Math.round(w * scale))}px`;
      canvas.style.height = `${Math.max(1, Math.round(h * scale))}px`;
      frame.classList.add('tba-loaded');
    });
  }
}
