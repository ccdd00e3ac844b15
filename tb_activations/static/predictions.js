// The "Prediction on the probe" panel: the probe's predicted class at the
// current step, its confidence over steps and the steps where it changed.

import {lineChart} from './chart.js';
import {el, fmt, setChildren} from './dom.js';

export class PredictionsPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.box = el('div', {id: 'tba-predictions'});
    this.root = el('section', {class: 'tba-panel', hidden: true},
      el('h3', {text: 'Prediction on the probe'}), this.box);
    this.predictions = null;
  }

  /** Fetches the run's predictions (a new run). */
  runChanged(run) {
    this.predictions = null;
    this.key = null;
    this.fetch(run);
  }

  /** Fetches them again: training goes on. */
  refreshed() {
    this.fetch(this.app.state.run);
  }

  fetch(run) {
    this.app.getJson('predictions', {run}).then((p) => {
      if (this.app.state.run !== run) return;
      if (JSON.stringify(p) === JSON.stringify(this.predictions)) return;
      this.predictions = p;
      this.key = null;
      this.draw();
    }, () => {});
  }

  update() {
    if (this.key === `${this.app.currentStep()}/${this.app.state.probe}`) return;
    this.draw();
  }

  draw() {
    const p = this.predictions;
    if (!p || !p.steps.length) {
      this.root.hidden = true;
      return;
    }
    this.root.hidden = false;
    const probe = Math.min(this.app.state.probe, p.steps[0].rows.length - 1);
    const step = this.app.currentStep();
    this.key = `${step}/${this.app.state.probe}`;
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
    setChildren(this.box,
      el('div', {id: 'tba-prediction-now', text: line}),
      el('figure', {class: 'tba-chart-card', dataset: {series: 'confidence'}},
        el('figcaption', {class: 'tba-caption', text: 'confidence of the predicted class'}),
        lineChart(p.steps.map((s) => [s.step, s.rows[probe][1]]), {markStep: step, unit: true, label: 'confidence of the predicted class'})),
      el('div', {class: 'tba-note', text: `Predicted class changes: ${changes.join(' → ')}`}));
  }
}
