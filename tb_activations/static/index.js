// The Activations dashboard: entry module loaded by TensorBoard's
// data/plugin_entry.html?name=activations, which calls render().
//
// Plain ES modules, no build step, nothing from outside TensorBoard's origin
// (its Content-Security-Policy allows same-origin scripts and fetches only).
// Names from the log directory reach the page through textContent only.

import {ApiError, getJson, imageUrl, loadImage} from './static/api.js';
import {lineChart} from './static/chart.js';
import {el, fmt, setChildren, setOptions} from './static/dom.js';

const PLAY_MS = 700;
const UNIT_SERIES = /^(cka_.*|.*_fraction|topk_overlap)$/;
const FILMSTRIP_MAX = 60;
const EMPTY_POLL_MS = 5000;
const REFRESH_MS = 10000;
const DEFAULT_RUN = 'activations'; // metadata.DEFAULT_RUN_NAME
const SNIPPET = `from tb_activations import ActivationLogger, Probes

probes = Probes(images)            # uint8 (N, H, W, 3), a few fixed images
logger = ActivationLogger(model, probes, "logs/run1", top_k=5)
for step in range(steps):
    ...                            # train
    logger.log(step)
logger.close()

# then:  tensorboard --logdir logs --samples_per_plugin=images=0,activations=0`;

/** Renders the dashboard into document.body. Called once by TensorBoard. */
export async function render() {
  const style = el('link', {rel: 'stylesheet', href: new URL('./static/style.css', import.meta.url).href});
  document.head.append(style);
  const app = new Dashboard(document.body);
  window.__tbActivations = app; // handy from the devtools console
  await app.start();
}

// ---------------------------------------------------------------------------
// Grid geometry: mosaic pixels <-> channel index (see metadata.create_layer_content).

/** Size in px of a tiling of `cols` x `rows` cells. */
function gridSize(grid) {
  return {
    width: grid.cols * (grid.cell_w + grid.sep) - grid.sep,
    height: grid.rows * (grid.cell_h + grid.sep) - grid.sep,
  };
}

/**
 * The channel under natural-pixel position (x, y) of a mosaic `naturalW` x `naturalH`,
 * or null on a separator, past the last channel or outside.
 */
export function channelAt(grid, channels, x, y, naturalW, naturalH) {
  const size = gridSize(grid);
  const gx = (x * size.width) / naturalW; // tolerate a rescaled PNG
  const gy = (y * size.height) / naturalH;
  if (gx < 0 || gy < 0 || gx >= size.width || gy >= size.height) return null;
  const col = Math.floor(gx / (grid.cell_w + grid.sep));
  const row = Math.floor(gy / (grid.cell_h + grid.sep));
  if (gx - col * (grid.cell_w + grid.sep) >= grid.cell_w) return null;
  if (gy - row * (grid.cell_h + grid.sep) >= grid.cell_h) return null;
  const channel = row * grid.cols + col;
  return col < grid.cols && channel < channels ? channel : null;
}

/** The cell of `channel` in natural pixels of a mosaic `naturalW` x `naturalH`. */
export function cellRect(grid, channel, naturalW, naturalH) {
  const size = gridSize(grid);
  const fx = naturalW / size.width;
  const fy = naturalH / size.height;
  const col = channel % grid.cols;
  const row = Math.floor(channel / grid.cols);
  return {
    x: col * (grid.cell_w + grid.sep) * fx,
    y: row * (grid.cell_h + grid.sep) * fy,
    w: grid.cell_w * fx,
    h: grid.cell_h * fy,
  };
}

/** Channels of the top-k strip, as the logger ranks them (stable, largest first, NaN last). */
function topChannels(statsForProbe, fieldIndex, k) {
  const keyed = statsForProbe.map((row, c) => [row[fieldIndex], c]);
  keyed.sort((a, b) => {
    const va = a[0] === null || !Number.isFinite(a[0]) ? -Infinity : a[0];
    const vb = b[0] === null || !Number.isFinite(b[0]) ? -Infinity : b[0];
    return vb - va || a[1] - b[1];
  });
  return keyed.slice(0, k).map(([, c]) => c);
}

function cropToCanvas(canvas, img, rect) {
  canvas.width = Math.max(1, Math.round(rect.w));
  canvas.height = Math.max(1, Math.round(rect.h));
  const g = canvas.getContext('2d');
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(img, rect.x, rect.y, rect.w, rect.h, 0, 0, canvas.width, canvas.height);
}

// ---------------------------------------------------------------------------

/** One mosaic image with hover (channel + stats) and click (open channel). */
class MosaicView {
  constructor({caption, onHover, onPick, maxWidth = 520}) {
    this.maxWidth = maxWidth;
    this.caption = el('figcaption', {class: 'tba-caption'}, caption);
    this.img = el('img', {class: 'tba-mosaic-img', alt: 'activation mosaic', draggable: 'false'});
    this.hoverBox = el('div', {class: 'tba-cellbox tba-hoverbox', hidden: true});
    this.pickBox = el('div', {class: 'tba-cellbox tba-pickbox', hidden: true});
    this.message = el('div', {class: 'tba-message', hidden: true});
    this.wrap = el('div', {class: 'tba-mosaic-wrap'}, this.img, this.hoverBox, this.pickBox);
    this.root = el('figure', {class: 'tba-figure'}, this.caption, this.wrap, this.message);
    this.layer = null;
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

  /** Shows the mosaic of `layer` at `step` for probe `probe`; resolves to the image or null. */
  async show(run, layer, step, probe) {
    this.layer = layer;
    this.run = run;
    this.step = step;
    if (!layer.views.mosaic) {
      this.wrap.hidden = true;
      this.message.hidden = false;
      this.message.textContent = 'The mosaic view was not logged for this layer.';
      return null;
    }
    const src = imageUrl(run, layer.views.mosaic, step, probe);
    try {
      const img = await loadImage(src);
      if (this.layer !== layer || this.step !== step) return null; // superseded
      this.img.src = img.src;
      this.img.dataset.layer = layer.layer; // what is on display (read by tests)
      this.img.dataset.step = String(step);
      this.natural = {w: img.naturalWidth, h: img.naturalHeight};
      let scale = Math.floor(this.maxWidth / img.naturalWidth);
      if (scale < 1) scale = this.maxWidth / img.naturalWidth;
      scale = Math.min(scale, 24);
      this.img.style.width = `${Math.round(img.naturalWidth * scale)}px`;
      this.img.style.height = `${Math.round(img.naturalHeight * scale)}px`;
      this.wrap.hidden = false;
      this.message.hidden = true;
      return img;
    } catch (err) {
      this.wrap.hidden = true;
      this.message.hidden = false;
      this.message.textContent = err instanceof ApiError ? err.message : String(err);
      return null;
    }
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

// ---------------------------------------------------------------------------

class Dashboard {
  constructor(body) {
    this.body = body;
    this.state = {
      run: null, layerName: null, probe: 0, stepIndex: 0, channel: null,
      compareMode: 'off', compareStep: null, compareRun: null,
    };
    this.runs = [];
    this.data = null; // /layers answer for the current run
    this.compareData = null; // /layers answer for the compare run
    this.statsCache = new Map();
    this.token = 0;
    this.timer = null;
    this.build();
  }

  // -- layout ---------------------------------------------------------------

  build() {
    const field = (label, control) => el('label', {class: 'tba-field'}, el('span', {text: label}), control);
    this.runSelect = el('select', {id: 'tba-run', onchange: () => this.selectRun(this.runSelect.value)});
    this.probeSelect = el('select', {id: 'tba-probe', onchange: () => {
      this.state.probe = Number(this.probeSelect.value);
      this.update();
      this.drawPredictions();
    }});
    this.layerSelect = el('select', {id: 'tba-layer', onchange: () => this.selectLayer(this.layerSelect.value)});
    this.refreshButton = el('button', {type: 'button', id: 'tba-refresh', text: 'Reload',
      title: 'Read the log directory again', onclick: () => this.reload()});
    this.controls = el('div', {class: 'tba-controls'},
      field('Run', this.runSelect), field('Probe', this.probeSelect), field('Layer', this.layerSelect),
      this.refreshButton);

    this.playButton = el('button', {type: 'button', id: 'tba-play', text: 'Play', onclick: () => this.togglePlay()});
    this.slider = el('input', {type: 'range', id: 'tba-step', min: 0, max: 0, step: 1, value: 0,
      'aria-label': 'step'});
    this.slider.addEventListener('input', () => this.setStepIndex(Number(this.slider.value)));
    this.stepLabel = el('span', {id: 'tba-step-label', class: 'tba-step-label'});
    this.stepBar = el('div', {class: 'tba-stepbar'}, this.playButton, this.slider, this.stepLabel);

    this.notice = el('div', {id: 'tba-notice', class: 'tba-notice', role: 'status', hidden: true});
    this.error = el('div', {id: 'tba-error', class: 'tba-error', role: 'alert', hidden: true});
    this.empty = el('div', {id: 'tba-empty', class: 'tba-empty', hidden: true},
      el('h2', {text: 'No activation data yet'}),
      el('p', {text: 'This log directory holds no data written by tb_activations. ' +
        'Log activations with the snippet below; this page checks again every few seconds.'}),
      el('pre', {class: 'tba-snippet'}, el('code', {text: SNIPPET})));

    // Mosaic (A) and comparison (B)
    this.mosaicA = new MosaicView({
      caption: 'Mosaic',
      onHover: (c, view) => this.showHover(c, view),
      onPick: (c) => this.pickChannel(c),
    });
    this.mosaicB = new MosaicView({
      caption: 'Compare',
      onHover: (c, view) => this.showHover(c, view),
      onPick: (c) => this.pickChannel(c),
    });
    this.mosaicB.root.hidden = true;
    this.hover = el('div', {id: 'tba-hover', class: 'tba-hover', 'aria-live': 'polite',
      text: 'Hover over the mosaic to see a channel; click to open it.'});
    this.compareMode = el('select', {id: 'tba-compare-mode', onchange: () => {
      this.state.compareMode = this.compareMode.value;
      this.updateCompareControls();
      this.update();
    }});
    setOptions(this.compareMode, [['off', 'nothing'], ['step', 'another step'], ['run', 'another run']], 'off');
    this.compareStep = el('select', {id: 'tba-compare-step', hidden: true, onchange: () => {
      this.state.compareStep = Number(this.compareStep.value);
      this.update();
    }});
    this.compareRun = el('select', {id: 'tba-compare-run', hidden: true, onchange: () => this.selectCompareRun(this.compareRun.value)});
    const compareBar = el('div', {class: 'tba-comparebar'},
      el('span', {text: 'Compare with '}), this.compareMode, this.compareStep, this.compareRun);
    this.layerInfo = el('div', {id: 'tba-layer-info', class: 'tba-layer-info'});
    const mosaicPanel = el('section', {class: 'tba-panel tba-mosaic-panel'},
      el('h3', {text: 'Channels'}), this.layerInfo, compareBar,
      el('div', {class: 'tba-pair'}, this.mosaicA.root, this.mosaicB.root), this.hover);

    // Channel
    this.channelTitle = el('h3', {id: 'tba-channel-title', text: 'Channel'});
    this.channelStats = el('div', {id: 'tba-channel-stats', class: 'tba-channel-stats'});
    this.cellCanvas = el('canvas', {id: 'tba-channel-cell', class: 'tba-cell', width: 1, height: 1});
    this.overCanvas = el('canvas', {id: 'tba-channel-overlay', class: 'tba-over', width: 1, height: 1});
    this.overCaption = el('figcaption', {class: 'tba-caption'});
    this.filmstrip = el('div', {id: 'tba-filmstrip', class: 'tba-filmstrip'});
    this.filmNote = el('div', {class: 'tba-note'});
    this.channelPanel = el('section', {id: 'tba-channel', class: 'tba-panel tba-channel-panel', hidden: true},
      this.channelTitle, this.channelStats,
      el('div', {class: 'tba-pair'},
        el('figure', {class: 'tba-figure'}, el('figcaption', {class: 'tba-caption', text: 'Enlarged'}), this.cellCanvas),
        el('figure', {class: 'tba-figure'}, this.overCaption, this.overCanvas)),
      el('h4', {text: 'History across steps'}), this.filmstrip, this.filmNote);

    // Top-k and overlay
    this.topkImg = el('img', {id: 'tba-topk', class: 'tba-strip', alt: 'top-k channels'});
    this.topkImg.addEventListener('click', (e) => this.pickTopk(e));
    this.topkCaption = el('figcaption', {id: 'tba-topk-caption', class: 'tba-caption'});
    this.topkMsg = el('div', {class: 'tba-message', hidden: true});
    this.overlayImg = el('img', {id: 'tba-overlay', class: 'tba-strip', alt: 'overlay'});
    this.overlayMsg = el('div', {class: 'tba-message', hidden: true});
    const topPanel = el('section', {class: 'tba-panel'},
      el('h3', {text: 'Strongest channels and overlay'}),
      el('figure', {class: 'tba-figure'}, this.topkCaption, this.topkImg, this.topkMsg),
      el('figure', {class: 'tba-figure'},
        el('figcaption', {class: 'tba-caption', text: 'Overlay on the probe: strongest channel | mean over channels'}),
        this.overlayImg, this.overlayMsg));

    // Drift
    this.drift = el('div', {id: 'tba-drift', class: 'tba-charts'});
    const driftPanel = el('section', {class: 'tba-panel'}, el('h3', {text: 'Drift and dead channels'}), this.drift);
    this.predictionsBox = el('div', {id: 'tba-predictions'});
    this.predictionsPanel = el('section', {class: 'tba-panel', hidden: true},
      el('h3', {text: 'Prediction on the probe'}), this.predictionsBox);

    this.main = el('div', {class: 'tba-main', hidden: true},
      this.stepBar,
      el('div', {class: 'tba-columns'},
        el('div', {class: 'tba-col'}, mosaicPanel, this.channelPanel),
        el('div', {class: 'tba-col'}, topPanel, driftPanel, this.predictionsPanel)));

    setChildren(this.body, el('div', {class: 'tba-root'},
      this.controls, this.notice, this.error, this.empty, this.main));
    this.body.addEventListener('keydown', (e) => {
      if (e.target.tagName === 'SELECT' || e.target.tagName === 'INPUT') return;
      if (e.key === ' ') {
        e.preventDefault();
        this.togglePlay();
      } else if (e.key === 'ArrowRight') this.setStepIndex(this.state.stepIndex + 1);
      else if (e.key === 'ArrowLeft') this.setStepIndex(this.state.stepIndex - 1);
    });
  }

  // -- loading --------------------------------------------------------------

  async start() {
    await this.reload();
  }

  showError(err) {
    this.error.hidden = !err;
    this.error.textContent = err ? (err instanceof ApiError ? err.message : String(err)) : '';
  }

  async reload() {
    let answer;
    try {
      answer = await getJson('runs');
    } catch (err) {
      this.showError(err);
      return;
    }
    this.showError(null);
    this.runs = answer.runs.map((r) => r.run);
    if (!this.runs.length) {
      this.empty.hidden = false;
      this.main.hidden = true;
      this.controls.hidden = true;
      clearTimeout(this.emptyTimer);
      this.emptyTimer = setTimeout(() => this.reload(), EMPTY_POLL_MS);
      return;
    }
    this.empty.hidden = true;
    this.controls.hidden = false;
    setOptions(this.runSelect, this.runs.map((r) => [r, r]), this.state.run);
    this.statsCache.clear();
    const preferred = [this.state.run, DEFAULT_RUN].find((r) => this.runs.includes(r));
    await this.selectRun(preferred ?? this.runs[0]);
    clearInterval(this.refreshTimer);
    this.refreshTimer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  /** Picks up newly logged steps and layers of the current run (training goes on). */
  async refresh() {
    if (this.timer || !this.state.run) return; // not while playing
    let data;
    try {
      data = await getJson('layers', {run: this.state.run});
    } catch (err) {
      return;
    }
    if (JSON.stringify(data) === JSON.stringify(this.data) || this.timer) return;
    const layer = this.layer();
    const atEnd = layer && this.state.stepIndex >= layer.steps.length - 1;
    const step = this.currentStep();
    this.data = data;
    setOptions(this.layerSelect, data.layers.map((l) => [l.layer, layerLabel(l)]), this.state.layerName);
    this.showSampling(data.sampling);
    const fresh = this.layer();
    if (!fresh) {
      this.selectLayer(data.layers[0]?.layer);
      return;
    }
    this.slider.max = String(Math.max(0, fresh.steps.length - 1));
    this.state.stepIndex = atEnd ? fresh.steps.length - 1 : nearestIndex(fresh.steps, step);
    this.update();
    this.updateDrift();
  }

  showSampling(sampling) {
    if (!sampling) {
      this.notice.hidden = true;
      return;
    }
    this.notice.hidden = false;
    setChildren(this.notice,
      el('strong', {text: 'Steps sampled. '}),
      `TensorBoard kept the images of ${sampling.kept} of the ${sampling.logged} logged steps. ` +
        'Restart it with ',
      el('code', {text: sampling.flag}),
      ' to keep every step.');
  }

  async selectRun(run) {
    this.stop();
    const token = ++this.token;
    let data;
    try {
      data = await getJson('layers', {run});
    } catch (err) {
      this.showError(err);
      return;
    }
    if (token !== this.token) return;
    this.showError(null);
    const previousStep = this.currentStep();
    this.state.run = run;
    this.runSelect.value = run;
    this.data = data;
    this.main.hidden = false;
    setOptions(this.layerSelect, data.layers.map((l) => [l.layer, layerLabel(l)]), this.state.layerName);
    this.showSampling(data.sampling);
    this.predictions = null;
    getJson('predictions', {run}).then((p) => {
      if (this.state.run !== run) return;
      this.predictions = p;
      this.drawPredictions();
    }, () => {});
    const names = data.layers.map((l) => l.layer);
    const layer = names.includes(this.state.layerName) ? this.state.layerName : names[0];
    this.selectLayer(layer, previousStep);
    this.updateCompareControls();
  }

  selectLayer(name, keepStep) {
    const step = keepStep ?? this.currentStep();
    this.state.layerName = name;
    this.layerSelect.value = name;
    const layer = this.layer();
    if (!layer) return;
    setOptions(this.probeSelect, layer.probes.map((p, i) => {
      const label = layer.labels && layer.labels[i] ? `${p} (${layer.labels[i]})` : p;
      return [String(i), label];
    }), String(this.state.probe));
    this.state.probe = Math.min(this.state.probe, layer.probes.length - 1);
    this.probeSelect.value = String(this.state.probe);
    this.slider.max = String(Math.max(0, layer.steps.length - 1));
    this.state.stepIndex = nearestIndex(layer.steps, step);
    const [h, w, c] = layer.shape;
    setChildren(this.layerInfo,
      el('span', {text: `#${layer.index} `}), el('strong', {text: layer.layer}),
      el('span', {text: ` ${layer.class_name} · output ${h}×${w}×${c} · ${layer.steps.length} steps kept` +
        (layer.logged_steps.length > layer.steps.length ? ` of ${layer.logged_steps.length} logged` : '')}));
    if (this.state.channel !== null && this.state.channel >= c) this.state.channel = null;
    this.updateCompareControls();
    this.update();
    this.updateDrift();
  }

  async selectCompareRun(run) {
    this.state.compareRun = run;
    try {
      this.compareData = await getJson('layers', {run});
    } catch (err) {
      this.compareData = null;
    }
    this.update();
  }

  updateCompareControls() {
    const mode = this.state.compareMode;
    this.compareStep.hidden = mode !== 'step';
    this.compareRun.hidden = mode !== 'run';
    const layer = this.layer();
    if (mode === 'step' && layer) {
      setOptions(this.compareStep, layer.steps.map((s) => [String(s), `step ${s}`]),
        String(this.state.compareStep ?? layer.steps[0]));
      this.state.compareStep = Number(this.compareStep.value);
    }
    if (mode === 'run') {
      const others = this.runs.filter((r) => r !== this.state.run);
      setOptions(this.compareRun, others.map((r) => [r, r]), this.state.compareRun);
      if (!others.length) {
        this.compareData = null;
        this.state.compareRun = null;
      } else if (this.compareRun.value !== this.state.compareRun || !this.compareData) {
        this.selectCompareRun(this.compareRun.value);
      }
    }
  }

  // -- state helpers --------------------------------------------------------

  layer() {
    return this.data?.layers.find((l) => l.layer === this.state.layerName) ?? null;
  }

  currentStep() {
    const layer = this.layer();
    return layer && layer.steps.length ? layer.steps[Math.min(this.state.stepIndex, layer.steps.length - 1)] : undefined;
  }

  stats(run, layerName, step) {
    const key = JSON.stringify([run, layerName, step]);
    if (!this.statsCache.has(key)) {
      const promise = getJson('stats', {run, layer: layerName, step}).catch((err) => ({error: err}));
      this.statsCache.set(key, promise);
    }
    return this.statsCache.get(key);
  }

  setStepIndex(index) {
    const layer = this.layer();
    if (!layer || !layer.steps.length) return;
    const n = layer.steps.length;
    this.state.stepIndex = Math.max(0, Math.min(n - 1, index));
    this.update();
  }

  togglePlay() {
    if (this.timer) this.stop();
    else this.play();
  }

  play() {
    const layer = this.layer();
    if (!layer || layer.steps.length < 2) return;
    if (this.state.stepIndex >= layer.steps.length - 1) this.state.stepIndex = -1;
    this.playButton.textContent = 'Pause';
    this.timer = setInterval(() => {
      const n = this.layer()?.steps.length ?? 0;
      if (this.state.stepIndex + 1 >= n) {
        this.stop();
        return;
      }
      this.setStepIndex(this.state.stepIndex + 1);
    }, PLAY_MS);
    this.setStepIndex(this.state.stepIndex + 1);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.playButton.textContent = 'Play';
  }

  // -- drawing --------------------------------------------------------------

  /** Redraws everything that depends on run, layer, probe, step and channel. */
  async update() {
    const layer = this.layer();
    if (!layer) return;
    const token = ++this.token;
    const run = this.state.run;
    const probe = this.state.probe;
    const steps = layer.steps;
    if (!steps.length) {
      this.stepLabel.textContent = 'no mosaic kept for this layer';
      return;
    }
    const step = this.currentStep();
    this.slider.value = String(this.state.stepIndex);
    this.stepLabel.textContent = `step ${step} (${this.state.stepIndex + 1} of ${steps.length})`;
    const probeName = layer.probes[probe] ?? String(probe);
    this.mosaicA.setCaption(`Mosaic · ${run} · step ${step} · ${probeName}`);

    // Images of this step, and the next one for smooth playback.
    const mosaicPromise = this.mosaicA.show(run, layer, step, probe);
    this.showStrip(this.topkImg, this.topkMsg, layer.views.topk && imageUrl(run, layer.views.topk, step, probe),
      'The top-k view was not logged for this layer.');
    this.showStrip(this.overlayImg, this.overlayMsg,
      layer.views.overlay && imageUrl(run, layer.views.overlay, step, probe),
      'The overlay view was not logged for this layer (it needs a spatial output).');
    const next = steps[this.state.stepIndex + 1];
    if (next !== undefined) loadImage(imageUrl(run, layer.views.mosaic, next, probe)).catch(() => {});

    this.updateCompare(layer, step, probe);
    const stats = await this.stats(run, layer.layer, step);
    if (token !== this.token) return;
    this.currentStats = stats;
    this.updateTopkCaption(layer, stats, probe);
    const mosaic = await mosaicPromise;
    if (token !== this.token) return;
    this.mosaicA.placeBox(this.mosaicA.pickBox, this.state.channel);
    this.updateChannel(layer, step, probe, mosaic, stats, token);
    this.markDrift(step);
  }

  async showStrip(img, message, src, missing) {
    if (!src) {
      img.hidden = true;
      message.hidden = false;
      message.textContent = missing;
      return;
    }
    try {
      const loaded = await loadImage(src);
      img.src = loaded.src;
      const scale = Math.max(1, Math.min(8, Math.floor(360 / loaded.naturalWidth)));
      img.style.width = `${loaded.naturalWidth * scale}px`;
      img.hidden = false;
      message.hidden = true;
    } catch (err) {
      img.hidden = true;
      message.hidden = false;
      message.textContent = err instanceof ApiError ? err.message : String(err);
    }
  }

  async updateCompare(layer, step, probe) {
    const mode = this.state.compareMode;
    const view = this.mosaicB;
    view.root.hidden = mode === 'off';
    if (mode === 'step') {
      const other = this.state.compareStep ?? layer.steps[0];
      view.setCaption(`Compare · ${this.state.run} · step ${other} (${other - step >= 0 ? '+' : ''}${other - step})`);
      await view.show(this.state.run, layer, other, probe);
    } else if (mode === 'run') {
      const otherRun = this.state.compareRun;
      const otherLayer = this.compareData?.layers.find((l) => l.layer === layer.layer);
      if (!otherRun || !otherLayer || !otherLayer.steps.length) {
        view.setCaption('Compare');
        view.wrap.hidden = true;
        view.message.hidden = false;
        view.message.textContent = otherRun
          ? `Run ${otherRun} has no layer ${layer.layer}.`
          : 'There is no other run to compare with.';
        view.layer = null;
        return;
      }
      const otherStep = otherLayer.steps[nearestIndex(otherLayer.steps, step)];
      view.setCaption(`Compare · ${otherRun} · step ${otherStep}`);
      await view.show(otherRun, otherLayer, otherStep, Math.min(probe, otherLayer.probes.length - 1));
    }
    if (!view.root.hidden) view.placeBox(view.pickBox, this.state.channel);
  }

  async showHover(channel, view) {
    if (channel === null) {
      this.hover.textContent = this.state.channel === null
        ? 'Hover over the mosaic to see a channel; click to open it.'
        : `Channel ${this.state.channel} open.`;
      return;
    }
    const layer = view.layer;
    const stats = await this.stats(view.run, layer.layer, view.step);
    const parts = [`channel ${channel}`];
    if (stats.error) {
      parts.push(`no statistics at step ${view.step} (${stats.error.status === 404 ? 'not kept' : 'error'})`);
    } else {
      const probe = Math.min(this.state.probe, stats.stats.length - 1);
      const [mean, max, min, std] = stats.stats[probe][channel];
      parts.push(`mean ${fmt(mean)}`, `max ${fmt(max)}`, `min ${fmt(min)}`, `std ${fmt(std)}`,
        stats.dead[channel] ? 'dead (0 on every probe)' : 'alive');
    }
    this.hover.textContent = `${parts.join(' · ')}  [${view.run}, step ${view.step}]`;
  }

  pickChannel(channel) {
    this.state.channel = channel;
    this.update();
    this.channelPanel.scrollIntoView?.({block: 'nearest'});
  }

  pickTopk(event) {
    const layer = this.layer();
    const stats = this.currentStats;
    if (!layer || !stats || stats.error) return;
    const box = this.topkImg.getBoundingClientRect();
    const k = Math.min(layer.top_k, stats.channels);
    const i = Math.floor(((event.clientX - box.left) / box.width) * k);
    const field = Math.max(0, stats.fields.indexOf(layer.rank_by));
    const channels = topChannels(stats.stats[Math.min(this.state.probe, stats.stats.length - 1)], field, k);
    if (channels[i] !== undefined) this.pickChannel(channels[i]);
  }

  updateTopkCaption(layer, stats, probe) {
    if (stats.error) {
      this.topkCaption.textContent = `Top ${layer.top_k} channels by ${layer.rank_by}`;
      return;
    }
    const field = Math.max(0, stats.fields.indexOf(layer.rank_by));
    const channels = topChannels(stats.stats[Math.min(probe, stats.stats.length - 1)], field, layer.top_k);
    this.topkCaption.textContent = `Top ${layer.top_k} channels by ${layer.rank_by}: ${channels.join(', ')} (click one to open it)`;
  }

  async updateChannel(layer, step, probe, mosaic, stats, token) {
    const channel = this.state.channel;
    if (channel === null) {
      this.channelPanel.hidden = true;
      return;
    }
    this.channelPanel.hidden = false;
    const probeName = layer.probes[probe] ?? String(probe);
    this.channelTitle.textContent = `Channel ${channel} of ${layer.layer} · ${probeName} · step ${step}`;
    if (stats.error) {
      this.channelStats.textContent = stats.error.message;
    } else {
      const [mean, max, min, std] = stats.stats[Math.min(probe, stats.stats.length - 1)][channel];
      this.channelStats.textContent = `mean ${fmt(mean)} · max ${fmt(max)} · min ${fmt(min)} · std ${fmt(std)} · ` +
        (stats.dead[channel] ? 'dead on every probe' : 'alive');
    }
    if (mosaic) {
      const rect = cellRect(layer.grid, channel, mosaic.naturalWidth, mosaic.naturalHeight);
      cropToCanvas(this.cellCanvas, mosaic, rect);
      const scale = Math.max(1, Math.floor(192 / Math.max(rect.w, rect.h)));
      this.cellCanvas.style.width = `${Math.round(rect.w * scale)}px`;
      this.cellCanvas.style.height = `${Math.round(rect.h * scale)}px`;
      await this.drawOverlay(layer, step, probe, mosaic, rect);
    }
    if (token !== this.token) return;
    this.drawFilmstrip(layer, step, probe, channel, token);
  }

  /** The channel's map stretched over the probe: over the probe image when logged, else over the overlay view. */
  async drawOverlay(layer, step, probe, mosaic, rect) {
    const run = this.state.run;
    const g = this.overCanvas.getContext('2d');
    let base = null;
    let region = null;
    const probeTag = this.data.probe_images?.tag;
    if (probeTag) {
      const probeStep = this.data.probe_images.steps.includes(step) ? step : this.data.probe_images.steps[0];
      try {
        base = await loadImage(imageUrl(run, probeTag, probeStep, probe));
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

  async drawFilmstrip(layer, step, probe, channel, token) {
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
    const run = this.state.run;
    const frames = steps.map((s) => {
      const canvas = el('canvas', {class: 'tba-frame-canvas', width: 1, height: 1});
      const frame = el('button', {type: 'button', class: s === step ? 'tba-frame tba-current' : 'tba-frame',
        title: `step ${s}`, dataset: {step: String(s)},
        onclick: () => this.setStepIndex(layer.steps.indexOf(s))},
      canvas, el('span', {text: String(s)}));
      return {s, canvas, frame};
    });
    setChildren(this.filmstrip, ...frames.map((f) => f.frame));
    await Promise.all(frames.map(async ({s, canvas, frame}) => {
      try {
        const img = await loadImage(imageUrl(run, layer.views.mosaic, s, probe));
        if (token !== this.token) return;
        cropToCanvas(canvas, img, cellRect(layer.grid, channel, img.naturalWidth, img.naturalHeight));
        frame.classList.add('tba-loaded');
      } catch (err) {
        frame.classList.add('tba-missing');
        frame.title = `step ${s}: ${err.message ?? err}`;
      }
    }));
  }

  async updateDrift() {
    const layer = this.layer();
    if (!layer) return;
    const run = this.state.run;
    let answer;
    try {
      answer = await getJson('scalars', {run, layer: layer.layer});
    } catch (err) {
      setChildren(this.drift, el('div', {class: 'tba-message', text: err.message ?? String(err)}));
      return;
    }
    if (run !== this.state.run || layer !== this.layer()) return;
    this.driftSeries = answer.series.filter((s) => s.points.length);
    this.drawDrift();
  }

  drawDrift() {
    const series = this.driftSeries ?? [];
    const hasDrift = series.some((s) => s.name.startsWith('cka_'));
    const cards = series.map((s) => el('figure', {class: 'tba-chart-card', dataset: {series: s.name}},
      el('figcaption', {class: 'tba-caption', text: `${s.name}`}),
      lineChart(s.points, {markStep: this.currentStep(), unit: UNIT_SERIES.test(s.name), onPick: (step) => {
        const i = this.layer().steps.indexOf(step);
        if (i >= 0) this.setStepIndex(i);
      }})));
    setChildren(this.drift,
      series.length ? null : el('div', {class: 'tba-message', text: 'No scalars for this layer.'}),
      ...cards,
      hasDrift ? null : el('p', {class: 'tba-note', text:
        'CKA drift charts appear here once the logger writes them (cka_first, cka_previous, ...).'}));
  }

  markDrift(step) {
    if (this.driftStep === step && this.predictionsKey === `${step}/${this.state.probe}`) return;
    this.driftStep = step;
    this.drawDrift();
    this.drawPredictions();
  }

  /** The probe's predicted class at the current step, its confidence over steps and class changes. */
  drawPredictions() {
    const p = this.predictions;
    if (!p || !p.steps.length) {
      this.predictionsPanel.hidden = true;
      return;
    }
    this.predictionsPanel.hidden = false;
    const probe = Math.min(this.state.probe, p.steps[0].rows.length - 1);
    const step = this.currentStep();
    this.predictionsKey = `${step}/${this.state.probe}`;
    const className = (c) => (c === null || c < 0 ? 'none' : p.class_names?.[c] ?? `class ${c}`);
    const at = p.steps.find((s) => s.step === step) ?? p.steps[p.steps.length - 1];
    const [predicted, confidence, label, labelProb] = at.rows[probe];
    const line = `${p.probes[probe] ?? `probe ${probe}`} at step ${at.step}: ${className(predicted)} ` +
      `(p = ${fmt(confidence)})` + (label !== null && label >= 0 ? ` · label ${className(label)} (p = ${fmt(labelProb)})` : '');
    const changes = [];
    let last;
    for (const s of p.steps) {
      const c = s.rows[probe][0];
      if (c !== last) changes.push(`step ${s.step}: ${className(c)}`);
      last = c;
    }
    setChildren(this.predictionsBox,
      el('div', {id: 'tba-prediction-now', text: line}),
      el('figure', {class: 'tba-chart-card', dataset: {series: 'confidence'}},
        el('figcaption', {class: 'tba-caption', text: 'confidence of the predicted class'}),
        lineChart(p.steps.map((s) => [s.step, s.rows[probe][1]]), {markStep: step, unit: true})),
      el('div', {class: 'tba-note', text: `Predicted class changes: ${changes.join(' → ')}`}));
  }
}

function layerLabel(layer) {
  const [h, w, c] = layer.shape;
  return `${layer.index}. ${layer.layer} — ${layer.class_name} ${h}×${w}×${c}`;
}

function nearestIndex(steps, step) {
  if (!steps.length || step === undefined) return Math.max(0, steps.length - 1);
  let best = 0;
  for (let i = 0; i < steps.length; i++) {
    if (Math.abs(steps[i] - step) < Math.abs(steps[best] - step)) best = i;
  }
  return best;
}
