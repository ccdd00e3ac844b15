// The dashboard core: loads runs and layers, owns the view state, and asks
// every panel to redraw when it changes.
//
// A panel is an object with a `root` element, a `column` ('left' or 'right')
// and any of these methods, all optional:
//   runChanged(run)      a run was selected (its /layers answer is app.data)
//   layerChanged(layer)  a layer was selected, or the run changed under it
//                        (layer.steps and layer.logged_steps are loaded: /steps)
//   refreshed(layer)     the periodic poll (every 10 s while the tab is shown)
//                        ran: fetch again what may have grown
//   update(view)         redraw for `view`, called on every change of step,
//                        probe, channel, layer or run, where view is
//                        {run, layer, step, stepIndex, probe, channel,
//                         stats: Promise</stats answer | {error}>,
//                         mosaic: Promise<HTMLImageElement | null>,
//                         isCurrent(): false once a newer view was drawn}
// A new panel is one module exporting such a class, added to PANELS in index.js.

import {ApiError, getJson} from './api.js';
import {el, setChildren} from './dom.js';
import {nearestIndex} from './geometry.js';
import {LayerControls} from './layers.js';
import {initialState, readUrlState, writeUrlState} from './state.js';
import {StepBar} from './steps.js';

const PLAY_MS = 700;
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

# then:  tensorboard --logdir logs --samples_per_plugin=images=100000,activations=100000,histograms=100000`;

export class Dashboard {
  /**
   * @param {HTMLElement} body where the dashboard draws itself
   * @param {Array<Function>} panelClasses constructors `new P(app)` of the panels, in page order
   */
  constructor(body, panelClasses) {
    this.body = body;
    this.state = initialState();
    this.runs = [];
    this.data = null; // /layers answer for the current run
    this.statsCache = new Map();
    this.token = 0;
    this.timer = null;
    this.controls = new LayerControls(this);
    this.stepBar = new StepBar(this);
    this.panels = panelClasses.map((P) => new P(this));
    this.build();
  }

  /** GETs JSON from a plugin route (see api.js); panels fetch through this. */
  getJson(route, params) {
    return getJson(route, params);
  }

  /** The panel of class `P`, or undefined. */
  panel(P) {
    return this.panels.find((p) => p instanceof P);
  }

  // -- layout ---------------------------------------------------------------

  build() {
    this.notice = el('div', {id: 'tba-notice', class: 'tba-notice', role: 'status', hidden: true});
    this.error = el('div', {id: 'tba-error', class: 'tba-error', role: 'alert', hidden: true});
    this.empty = el('div', {id: 'tba-empty', class: 'tba-empty', hidden: true},
      el('h2', {text: 'No activation data yet'}),
      el('p', {text: 'This log directory holds no data written by tb_activations. ' +
        'Log activations with the snippet below; this page checks again every few seconds.'}),
      el('pre', {class: 'tba-snippet'}, el('code', {text: SNIPPET})));
    const column = (name) => el('div', {class: 'tba-col'},
      ...this.panels.filter((p) => (p.column ?? 'right') === name).map((p) => p.root));
    this.main = el('div', {class: 'tba-main', hidden: true},
      this.stepBar.root,
      el('div', {class: 'tba-columns'}, column('left'), column('right')));
    setChildren(this.body, el('div', {class: 'tba-root'},
      this.controls.root, this.notice, this.error, this.empty, this.main));
    this.body.addEventListener('keydown', (e) => {
      if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
      if (['SELECT', 'INPUT', 'TEXTAREA', 'BUTTON'].includes(e.target.tagName)) return;
      if (e.key === ' ') {
        e.preventDefault();
        this.togglePlay();
      } else if (e.key === 'ArrowRight') this.setStepIndex(this.state.stepIndex + 1);
      else if (e.key === 'ArrowLeft') this.setStepIndex(this.state.stepIndex - 1);
      else if (e.key === 'ArrowDown' || e.key === 'j') this.stepLayer(+1, e);
      else if (e.key === 'ArrowUp' || e.key === 'k') this.stepLayer(-1, e);
      else if (e.key === '/') {
        e.preventDefault();
        this.controls.search.focus();
      }
    });
  }

  /** Calls `method(...args)` on every panel that has it. */
  notify(method, ...args) {
    for (const panel of this.panels) panel[method]?.(...args);
  }

  // -- loading --------------------------------------------------------------

  async start() {
    // A shared view: the state in the URL (see state.js).
    const {step, ...fromUrl} = readUrlState();
    Object.assign(this.state, fromUrl);
    this.pendingStep = step;
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
      this.controls.root.hidden = true;
      clearTimeout(this.emptyTimer);
      this.emptyTimer = setTimeout(() => this.reload(), EMPTY_POLL_MS);
      return;
    }
    this.empty.hidden = true;
    this.controls.root.hidden = false;
    this.controls.setRuns(this.runs, this.state.run);
    this.statsCache.clear();
    const preferred = [this.state.run, DEFAULT_RUN].find((r) => this.runs.includes(r));
    await this.selectRun(preferred ?? this.runs[0]);
    clearInterval(this.refreshTimer);
    this.refreshTimer = setInterval(() => this.refresh(), REFRESH_MS);
    if (!this.visibilityHooked) {
      // Catch up at once when the tab is shown again (the poll skips hidden tabs).
      document.addEventListener('visibilitychange', () => this.refresh());
      this.visibilityHooked = true;
    }
  }

  /** Whether the page can be seen: neither the browser tab nor TensorBoard's plugin frame is hidden. */
  shown() {
    if (document.visibilityState === 'hidden') return false;
    try {
      const frame = window.frameElement; // null when not framed (or cross-origin)
      if (frame && frame.getClientRects().length === 0) return false; // display: none
    } catch (err) {
      // A cross-origin parent: only the page's own visibility counts.
    }
    return true;
  }

  /** Picks up newly logged steps and layers of the current run (training goes on). */
  async refresh() {
    if (this.timer || !this.state.run || !this.shown()) return; // not while playing or hidden
    const run = this.state.run;
    let data;
    let steps;
    try {
      [data, steps] = await Promise.all([
        getJson('layers', {run}),
        this.state.layerName ? getJson('steps', {run, layer: this.state.layerName}) : null,
      ]);
    } catch (err) {
      return;
    }
    if (this.timer || run !== this.state.run) return;
    const layer = this.layer();
    const key = JSON.stringify([data, steps]);
    if (key === this.refreshKey) {
      // No new step or layer: the panels still look for their own new data (predictions, drift).
      if (layer?.steps) this.notify('refreshed', layer);
      return;
    }
    this.refreshKey = key;
    const atEnd = layer?.steps && this.state.stepIndex >= layer.steps.length - 1;
    const step = this.currentStep();
    this.setData(data);
    this.controls.setLayers(data.layers, this.state.layerName);
    this.showSampling(data.sampling);
    const fresh = this.layer();
    if (!fresh) {
      this.selectLayer(data.layers[0]?.layer);
      return;
    }
    if (steps) setSteps(fresh, steps);
    else await this.ensureSteps(run, fresh);
    this.stepBar.setCount(fresh.steps.length);
    this.state.stepIndex = atEnd ? fresh.steps.length - 1 : nearestIndex(fresh.steps, step);
    this.update();
    this.notify('refreshed', fresh);
  }

  /** Takes a /layers answer, keeping the steps already loaded for the current layer. */
  setData(data) {
    const current = this.data?.run === data.run ? this.layer() : null;
    const same = current && data.layers.find((l) => l.layer === current.layer);
    if (same && current.steps) setSteps(same, current);
    this.data = data; // other layers load their steps again when chosen
  }

  /**
   * Loads `layer.steps` and `layer.logged_steps` (GET /steps) unless known;
   * resolves to the layer. A layer of another run (comparison) works too.
   */
  async ensureSteps(run, layer) {
    if (layer.steps) return layer;
    try {
      setSteps(layer, await getJson('steps', {run, layer: layer.layer}));
    } catch (err) {
      setSteps(layer, {steps: [], logged_steps: [], sampling: null});
    }
    return layer;
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
    this.controls.showSelection(run, null);
    this.data = data; // fresh: the chosen layer loads its steps again (Reload means it)
    this.main.hidden = false;
    this.controls.setLayers(data.layers, this.state.layerName);
    this.showSampling(data.sampling);
    this.notify('runChanged', run);
    const names = data.layers.map((l) => l.layer);
    const layer = names.includes(this.state.layerName) ? this.state.layerName : names[0];
    this.selectLayer(layer, previousStep);
  }

  async selectLayer(name, keepStep) {
    const step = this.pendingStep ?? keepStep ?? this.currentStep();
    this.pendingStep = undefined;
    this.state.layerName = name;
    let layer = this.layer();
    if (!layer) return;
    if (!layer.steps) {
      this.controls.showSelection(null, layer, this.state.probe);
      await this.ensureSteps(this.state.run, layer);
      if (this.layer() !== layer) return; // another layer or run was chosen meanwhile
      layer = this.layer();
    }
    this.state.probe = Math.max(0, Math.min(this.state.probe, layer.probes.length - 1));
    this.controls.showSelection(null, layer, this.state.probe);
    this.stepBar.setCount(layer.steps.length);
    this.state.stepIndex = nearestIndex(layer.steps, step);
    if (this.state.channel !== null && this.state.channel >= layer.shape[2]) this.state.channel = null;
    this.notify('layerChanged', layer);
    this.update();
  }

  /** Chooses the next (`delta` 1) or previous (-1) layer of the list as filtered. */
  stepLayer(delta, event) {
    const next = this.controls.neighbour(this.state.layerName, delta);
    if (next === null) return;
    event?.preventDefault();
    this.selectLayer(next);
  }

  selectProbe(probe) {
    this.state.probe = probe;
    this.controls.probeSelect.value = String(probe);
    this.update();
  }

  pickChannel(channel) {
    this.state.channel = channel;
    this.update();
    document.getElementById('tba-channel')?.scrollIntoView?.({block: 'nearest'});
  }

  // -- state helpers --------------------------------------------------------

  layer() {
    return this.data?.layers.find((l) => l.layer === this.state.layerName) ?? null;
  }

  currentStep() {
    const layer = this.layer();
    return layer && layer.steps?.length ? layer.steps[Math.min(this.state.stepIndex, layer.steps.length - 1)] : undefined;
  }

  /** The /stats answer of a layer at a step (cached), or {error} when it cannot be had. */
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
    if (!layer || !layer.steps?.length) return;
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
    if (!layer || !layer.steps || layer.steps.length < 2) return;
    if (this.state.stepIndex >= layer.steps.length - 1) this.state.stepIndex = -1;
    this.stepBar.setPlaying(true);
    this.timer = setInterval(() => {
      const n = this.layer()?.steps?.length ?? 0;
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
    this.stepBar.setPlaying(false);
  }

  // -- drawing --------------------------------------------------------------

  /** Redraws everything that depends on run, layer, probe, step and channel. */
  update() {
    const layer = this.layer();
    if (!layer || !layer.steps) return;
    const token = ++this.token;
    const step = this.currentStep();
    const view = {
      run: this.state.run,
      layer,
      step,
      stepIndex: this.state.stepIndex,
      probe: this.state.probe,
      channel: this.state.channel,
      isCurrent: () => token === this.token,
    };
    this.stepBar.update(view);
    writeUrlState(this.state, step);
    if (step === undefined) return;
    view.stats = this.stats(view.run, layer.layer, step);
    view.mosaic = Promise.resolve(null);
    this.notify('update', view);
  }
}

/** Copies the steps of a /steps answer (or of another layer object) onto `layer`. */
function setSteps(layer, answer) {
  layer.steps = answer.steps;
  layer.logged_steps = answer.logged_steps;
  layer.sampling = answer.sampling ?? null;
}
