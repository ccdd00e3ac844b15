// The "Explain" panel: why the model answered what it did for the chosen probe.
// The attribution map of the predicted class (and, where the probe's label
// differs, of the label's class, right half of the image) at the current
// step, the probe's prediction beside it, the map's history over the logged
// steps, the average drop of each step, and the misclassified probes (click
// one to choose it; the probe picker marks them too). Data: GET /attribution,
// the overlays through GET /image.

import {imageUrl, loadImage} from './api.js';
import {lineChart} from './chart.js';
import {el, fmt, setChildren, setOptions} from './dom.js';

const HISTORY = 6; // thumbnails of the map at the latest logged steps up to the current one

export class ExplainPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.select = el('select', {id: 'tba-explain-method', 'aria-label': 'Attribution method',
      onchange: () => this.draw()});
    this.box = el('div', {id: 'tba-explain'});
    this.root = el('section', {class: 'tba-panel', hidden: true},
      el('h3', {text: 'Explain'}), this.select, this.box);
    this.answer = null;
    this.key = null;
  }

  runChanged(run) {
    this.answer = null;
    this.key = null;
    this.fetch(run);
  }

  refreshed() {
    this.fetch(this.app.state.run);
  }

  fetch(run) {
    this.app.getJson('attribution', {run}).then((answer) => {
      if (this.app.state.run !== run) return;
      if (JSON.stringify(answer) === JSON.stringify(this.answer)) return;
      const methods = answer.methods.map((m) => [m.method, m.layer ? `${m.method} at ${m.layer}` : m.method]);
      setOptions(this.select, methods, this.select.value);
      this.answer = answer;
      this.key = null;
      this.draw();
    }, () => {});
  }

  update() {
    if (this.key !== this.viewKey()) this.draw();
    this.markPicker();
  }

  /** Marks the probes misclassified at the shown step in the probe picker (layers.js
   * rebuilds its options on a layer change: marked again at every update). */
  markPicker() {
    const select = document.getElementById('tba-probe');
    const rows = this.shownRows;
    if (!select) return;
    for (const option of select.options) {
      const base = option.dataset.tbaBase ?? option.textContent;
      option.dataset.tbaBase = base;
      const row = rows?.[Number(option.value)];
      const wrong = row && row[1] !== null && row[1] >= 0;
      option.textContent = wrong ? `${base} \u2717 misclassified` : base;
    }
  }

  viewKey() {
    return `${this.select.value}/${this.app.currentStep()}/${this.app.state.probe}`;
  }

  method() {
    const methods = this.answer?.methods ?? [];
    return methods.find((m) => m.method === this.select.value) ?? methods[0];
  }

  draw() {
    const m = this.method();
    if (!m || !m.steps.length) {
      this.root.hidden = true;
      this.shownRows = null;
      this.markPicker();
      return;
    }
    this.root.hidden = false;
    this.select.hidden = this.answer.methods.length < 2;
    this.key = this.viewKey();
    const run = this.app.state.run;
    const probe = Math.min(this.app.state.probe, m.steps[0].rows.length - 1);
    const step = this.app.currentStep();
    // The latest attribution step up to the current one (costly methods skip steps).
    const upTo = m.steps.filter((s) => step === undefined || s.step <= step);
    const at = upTo.length ? upTo[upTo.length - 1] : m.steps[0];
    const className = (c) => (c === null || c < 0 ? 'none' : m.class_names?.[c] ?? `class ${c}`);
    const [predicted, label, drop] = at.rows[probe];
    this.shownRows = at.rows;
    const name = m.probes[probe] ?? `probe ${probe}`;
    const image = el('img', {id: 'tba-explain-image', class: 'tba-explain-image',
      alt: `${m.method} of ${name} at step ${at.step}`});
    this.show(image, imageUrl(run, m.overlay, at.step, probe));
    const line = `${name} at step ${at.step}: predicted ${className(predicted)}` +
      (label !== null && label >= 0 ? ` (left) · label ${className(label)} (right)` : '') +
      ` · average drop ${fmt(drop)}`;
    const history = upTo.slice(-HISTORY).map((s) => {
      const thumb = el('img', {class: 'tba-explain-thumb', title: `step ${s.step}`,
        alt: `step ${s.step}`, dataset: {step: String(s.step)}});
      this.show(thumb, imageUrl(run, m.overlay, s.step, probe));
      return el('figure', {class: 'tba-explain-frame'}, thumb,
        el('figcaption', {class: 'tba-caption', text: `${s.step}: ${className(s.rows[probe][0])}`}));
    });
    const wrong = at.rows.map((r, i) => [r, i]).filter(([r]) => r[1] !== null && r[1] >= 0);
    setChildren(this.box,
      el('div', {id: 'tba-explain-now', text: line}),
      image,
      el('h4', {text: 'History'}),
      el('div', {class: 'tba-explain-history'}, ...history),
      el('figure', {class: 'tba-chart-card', dataset: {series: 'average_drop'}},
        el('figcaption', {class: 'tba-caption',
          text: 'average drop: class probability lost on the explained region alone (low: faithful)'}),
        lineChart(m.steps.map((s) => [s.step, s.rows[probe][2]]), {markStep: at.step, unit: true})),
      wrong.length ?
        el('div', {id: 'tba-explain-misclassified'}, 'Misclassified at this step: ',
          ...wrong.map(([, i]) => el('button', {type: 'button', class: 'tba-link',
            text: m.probes[i] ?? `probe ${i}`, onclick: () => this.app.selectProbe(i)}))) :
        el('div', {class: 'tba-note', text: 'No labelled probe is misclassified at this step.'}),
      el('div', {class: 'tba-note', text: 'Maps of other classes: tb-activations explain MODEL ' +
        'IMAGE --class N (the logger writes the predicted and the label classes).'}));
  }

  show(img, src) {
    loadImage(src).then((loaded) => { img.src = loaded.src; }, () => { img.alt += ' (not available)'; });
  }
}
