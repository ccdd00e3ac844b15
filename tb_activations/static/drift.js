// The "Drift and dead channels" panel: one chart per scalar series of the layer.

import {lineChart} from './chart.js';
import {el, setChildren} from './dom.js';

const UNIT_SERIES = /^(cka_.*|.*_fraction|topk_overlap)$/;
// The logger's own measurements (tags _tb_activations/<name>, metadata.INTERNAL_PREFIX):
// what training waited for per step, the background worker's time, and its queue waits.
const SELF_PREFIX = '_tb_activations';
const SELF_SERIES = ['stall_seconds', 'worker_seconds', 'queue_waits', 'log_seconds'];

/** Index of the last of `steps` (ascending) at or before `step`, else 0; -1 if none. */
export function stepAtOrBefore(steps, step) {
  let found = steps.length ? 0 : -1;
  steps.forEach((s, i) => { if (s <= step) found = i; });
  return found;
}

export class DriftPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.charts = el('div', {id: 'tba-drift', class: 'tba-charts'});
    this.root = el('section', {class: 'tba-panel'}, el('h3', {text: 'Drift and dead channels'}), this.charts);
    this.series = [];
  }

  /** Fetches the layer's scalar series again (new layer, or new data). */
  async layerChanged(layer) {
    const run = this.app.state.run;
    let answer;
    let own;
    try {
      [answer, own] = await Promise.all([
        this.app.getJson('scalars', {run, layer: layer.layer}),
        // A run without the logger's timings (none written yet) only loses these charts.
        this.app.getJson('scalars', {run, layer: SELF_PREFIX}).catch(() => ({series: []})),
      ]);
    } catch (err) {
      setChildren(this.charts, el('div', {class: 'tba-message', text: err.message ?? String(err)}));
      return;
    }
    if (run !== this.app.state.run || layer !== this.app.layer()) return;
    const series = answer.series.filter((s) => s.points.length);
    const timings = SELF_SERIES.map((name) => own.series.find((s) => s.name === name))
      .filter((s) => s && s.points.length);
    const key = JSON.stringify([run, layer.layer, series, timings]);
    if (key === this.key) return; // nothing new (the poll): keep the charts as they are
    this.key = key;
    this.series = series;
    this.timings = timings;
    this.draw();
  }

  refreshed(layer) {
    this.layerChanged(layer);
  }

  update(view) {
    if (this.step === view.step) return;
    this.step = view.step;
    this.draw();
  }

  draw() {
    const series = this.series;
    const hasDrift = series.some((s) => s.name.startsWith('cka_'));
    // Steps without pictures (the logger's images_every) have scalars: a pick there shows
    // the nearest earlier step with pictures.
    const onPick = (step) => {
      const i = stepAtOrBefore(this.app.layer().steps ?? [], step);
      if (i >= 0) this.app.setStepIndex(i);
    };
    const card = (s, caption, self) => el('figure',
      {class: 'tba-chart-card', dataset: self ? {timing: s.name} : {series: s.name}},
      el('figcaption', {class: 'tba-caption', text: caption}),
      lineChart(s.points, {markStep: this.app.currentStep(), unit: !self && UNIT_SERIES.test(s.name),
        label: caption, onPick}));
    const cards = series.map((s) => card(s, s.name, false));
    const timings = (this.timings ?? []).map((s) => card(s, `logging: ${s.name} (all layers)`, true));
    setChildren(this.charts,
      series.length ? null : el('div', {class: 'tba-message', text: 'No scalars for this layer.'}),
      ...cards,
      ...timings,
      hasDrift ? null : el('p', {class: 'tba-note', text:
        'CKA drift charts appear here once the logger writes them (cka_first, cka_previous, ...).'}));
  }
}
