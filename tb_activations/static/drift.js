// The "Drift and dead channels" panel: one chart per scalar series of the layer.

import {lineChart} from './chart.js';
import {el, setChildren} from './dom.js';

const UNIT_SERIES = /^(cka_.*|.*_fraction|topk_overlap)$/;

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
    try {
      answer = await this.app.getJson('scalars', {run, layer: layer.layer});
    } catch (err) {
      setChildren(this.charts, el('div', {class: 'tba-message', text: err.message ?? String(err)}));
      return;
    }
    if (run !== this.app.state.run || layer !== this.app.layer()) return;
    const series = answer.series.filter((s) => s.points.length);
    const key = JSON.stringify([run, layer.layer, series]);
    if (key === this.key) return; // nothing new (the poll): keep the charts as they are
    this.key = key;
    this.series = series;
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
    const cards = series.map((s) => el('figure', {class: 'tba-chart-card', dataset: {series: s.name}},
      el('figcaption', {class: 'tba-caption', text: `${s.name}`}),
      lineChart(s.points, {markStep: this.app.currentStep(), unit: UNIT_SERIES.test(s.name), label: s.name, onPick: (step) => {
        const i = this.app.layer().steps.indexOf(step);
        if (i >= 0) this.app.setStepIndex(i);
      }})));
    setChildren(this.charts,
      series.length ? null : el('div', {class: 'tba-message', text: 'No scalars for this layer.'}),
      ...cards,
      hasDrift ? null : el('p', {class: 'tba-note', text:
        'CKA drift charts appear here once the logger writes them (cka_first, cka_previous, ...).'}));
  }
}
