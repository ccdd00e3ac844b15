// The "Explain" panel: why the model answered what it did for the chosen probe.
// The attribution map of the predicted class (and, where the probe's label
// differs, of the label's class, right half of the image) at the current
// step, the probe's prediction beside it, the map's history over the logged
// steps, the average drop of each step, and the misclassified probes (click
// one to choose it; the probe picker marks them too). The class chooser
// shows the map of another class instead: the label's, one of the classes
// logged with `attribution_classes=`, or any class by index or name (typed);
// those maps are drawn here over the probe image from the stored map tensors
// (GET /attribution_map), with the logger's colormap and alpha. Data: GET
// /attribution, the overlays through GET /image.

import {imageUrl, loadImage} from './api.js';
import {lineChart} from './chart.js';
import {el, fmt, setChildren, setOptions} from './dom.js';

const HISTORY = 6; // thumbnails of the map at the latest logged steps up to the current one
const THUMB_HEIGHT = 48;

const ordinal = (r) => `${r}${[, 'st', 'nd', 'rd'][r % 100 >= 11 && r % 100 <= 13 ? 0 : r % 10] ?? 'th'}`;

/** Bilinear upsampling of a (h, w) map (null: non-finite) scaled to [0, 1] by its finite
 * range, as the logger's overlays (render._unit, then PIL's bilinear resize); non-finite
 * cells are marked (nearest) to draw in the NaN colour. */
function unitMap(map, width, height) {
  const h = map.length;
  const w = h ? map[0].length : 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of map) for (const v of row) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const span = hi > lo ? hi - lo : 0;
  const unit = map.map((row) => row.map((v) => (v === null || span === 0 ? 0 : (v - lo) / span)));
  const out = new Float32Array(width * height);
  const bad = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(Math.max((y + 0.5) * h / height - 0.5, 0), h - 1);
    const y0 = Math.floor(sy);
    const y1 = Math.min(y0 + 1, h - 1);
    const fy = sy - y0;
    for (let x = 0; x < width; x++) {
      const sx = Math.min(Math.max((x + 0.5) * w / width - 0.5, 0), w - 1);
      const x0 = Math.floor(sx);
      const x1 = Math.min(x0 + 1, w - 1);
      const fx = sx - x0;
      const top = unit[y0][x0] * (1 - fx) + unit[y0][x1] * fx;
      const bottom = unit[y1][x0] * (1 - fx) + unit[y1][x1] * fx;
      out[y * width + x] = top * (1 - fy) + bottom * fy;
      bad[y * width + x] = map[Math.floor(y * h / height)][Math.floor(x * w / width)] === null ? 1 : 0;
    }
  }
  return {unit: out, bad};
}

/** Draws `map` over the probe image `base` (or alone when null) into `canvas`, blended as
 * the logger's overlays: colour = colors[round(unit * (levels - 1))], weight alpha. */
export function drawMap(canvas, base, map, style) {
  const width = base ? base.naturalWidth : map[0].length * 4;
  const height = base ? base.naturalHeight : map.length * 4;
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext('2d');
  let pixels;
  if (base) {
    g.drawImage(base, 0, 0);
    pixels = g.getImageData(0, 0, width, height);
  } else {
    pixels = g.createImageData(width, height);
  }
  const {unit, bad} = unitMap(map, width, height);
  const a = base ? Math.round(style.alpha * 256) : 256;
  const nan = style.colors[style.nan_index];
  for (let i = 0; i < unit.length; i++) {
    const o = 4 * i;
    if (bad[i]) {
      pixels.data.set([nan[0], nan[1], nan[2], 255], o);
      continue;
    }
    const level = Math.min(Math.max(Math.round(unit[i] * (style.levels - 1)), 0), style.levels - 1);
    const c = style.colors[level];
    for (let k = 0; k < 3; k++) pixels.data[o + k] = (pixels.data[o + k] * (256 - a) + c[k] * a + 128) >> 8;
    pixels.data[o + 3] = 255;
  }
  g.putImageData(pixels, 0, 0);
}

export class ExplainPanel {
  constructor(app) {
    this.app = app;
    this.column = 'right';
    this.select = el('select', {id: 'tba-explain-method', 'aria-label': 'Attribution method',
      onchange: () => this.draw()});
    // Which class's map: 'predicted', 'label', or a class index (as a string).
    this.classChoice = 'predicted';
    this.classSelect = el('select', {id: 'tba-explain-class', 'aria-label': 'Class to explain',
      onchange: () => { this.classChoice = this.classSelect.value; this.classInput.value = ''; this.draw(); }});
    this.classInput = el('input', {id: 'tba-explain-class-input', type: 'text', size: 14,
      placeholder: 'class index or name', 'aria-label': 'Class index or name',
      onchange: () => this.typedClass()});
    this.classInput.addEventListener('keydown', (e) => { if (e.key === 'Enter') this.typedClass(); });
    this.box = el('div', {id: 'tba-explain'});
    this.root = el('section', {class: 'tba-panel', hidden: true},
      el('h3', {text: 'Explain'}), this.select, ' ',
      el('label', {class: 'tba-explain-class'}, 'class ', this.classSelect, ' ', this.classInput),
      this.box);
    this.answer = null;
    this.key = null;
    this.drawing = 0; // the latest draw: older fetches do not paint over it
  }

  /** The class typed in the box: an index, or a name of the run's classes. */
  typedClass() {
    const text = this.classInput.value.trim();
    if (!text) return;
    const names = this.method()?.class_names ?? [];
    let value = null;
    if (/^[0-9]+$/.test(text)) value = String(Number(text));
    else {
      const at = names.indexOf(text);
      const folded = names.findIndex((n) => n !== null && n.toLowerCase() === text.toLowerCase());
      if (at >= 0 || folded >= 0) value = String(at >= 0 ? at : folded);
    }
    if (value === null) {
      this.classChoice = `?${text}`;
    } else {
      this.classChoice = value;
    }
    this.draw();
  }

  /** [value, label] of the class chooser: predicted, label, the logged classes. */
  classOptions(m) {
    const options = [['predicted', 'predicted class'], ['label', "label's class"]];
    for (const c of m.chosen?.classes ?? []) {
      const name = m.class_names?.[c];
      options.push([String(c), name ? `${name} (${c})` : `class ${c}`]);
    }
    for (const r of m.chosen?.ranks ?? []) options.push([`rank${r}`, `${ordinal(r)} highest score`]);
    const choice = this.classChoice;
    if (!options.some(([v]) => v === choice)) {
      const typed = choice.startsWith('?') ? choice.slice(1) : choice;
      const name = choice.startsWith('?') ? null : m.class_names?.[Number(choice)];
      options.push([choice, `${name ? `${name} (${typed})` : typed} (typed)`]);
    }
    return options;
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
    return `${this.select.value}/${this.classChoice}/${this.app.currentStep()}/${this.app.state.probe}`;
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
    setOptions(this.classSelect, this.classOptions(m), this.classChoice);
    this.key = this.viewKey();
    this.drawing += 1;
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
    if (this.classChoice !== 'predicted') {
      this.drawClass(m, run, probe, at, upTo, className);
      return;
    }
    const image = el('img', {id: 'tba-explain-image', class: 'tba-explain-image',
      alt: `${m.method} of ${name} at step ${at.step}`});
    // Scaled as the drawn maps of the other classes are (one map of the pair about 192 px),
    // so switching the class keeps the picture's size.
    image.addEventListener('load', () => {
      const side = Math.max((image.naturalWidth - 1) / 2, image.naturalHeight, 1);
      image.style.width = `${image.naturalWidth * Math.max(1, Math.floor(192 / side))}px`;
    });
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
      el('div', {class: 'tba-note', text: 'Maps of other classes: choose a class above; the ' +
        'logger writes the predicted and label classes, and those of attribution_classes=[...].'}));
  }

  /** The map of the chosen class (not "predicted"), drawn from the stored maps. */
  async drawClass(m, run, probe, at, upTo, className) {
    const drawing = this.drawing;
    const name = m.probes[probe] ?? `probe ${probe}`;
    const [predicted] = at.rows[probe];
    const choice = this.classChoice;
    const now = el('div', {id: 'tba-explain-now'});
    const image = el('canvas', {id: 'tba-explain-canvas', class: 'tba-explain-image'});
    const history = el('div', {class: 'tba-explain-history'});
    const missing = el('div', {id: 'tba-explain-missing', class: 'tba-note', hidden: true});
    setChildren(this.box, now, missing, image, el('h4', {text: 'History'}), history);
    const howTo = (c) => `Class ${c} was not logged. Log it with attribution_classes=[${c}] ` +
      `(ActivationLogger or ActivationCallback; tb-activations log --attribution-class ${c}), ` +
      `or run tb-activations explain MODEL IMAGE --class ${c}.`;
    if (choice.startsWith('?')) {
      const names = (m.class_names ?? []).filter((n) => n !== null);
      now.textContent = `${name} at step ${at.step}: predicted ${className(predicted)}`;
      missing.hidden = false;
      missing.textContent = `No class ${JSON.stringify(choice.slice(1))}: type a class index` +
        (names.length ? ` or one of the names ${names.slice(0, 20).join(', ')}.` : ' (the run has no class names).');
      image.hidden = true;
      return;
    }
    if (choice === 'label' && (m.labels?.[probe] ?? null) === null) {
      now.textContent = `${name} at step ${at.step}: predicted ${className(predicted)}`;
      missing.hidden = false;
      missing.textContent = 'This probe has no label (give the probes labels: Probes(..., labels=[...])).';
      image.hidden = true;
      return;
    }
    const steps = upTo.slice(-HISTORY).map((s) => s.step);
    if (!steps.includes(at.step)) steps.push(at.step);
    let answer;
    try {
      answer = await this.app.getJson('attribution_map',
        {run, method: m.method, probe, class: choice, steps: steps.join(',')});
    } catch (err) {
      if (drawing !== this.drawing) return;
      now.textContent = `${name} at step ${at.step}: predicted ${className(predicted)}`;
      missing.hidden = false;
      missing.textContent = err.message;
      image.hidden = true;
      return;
    }
    if (drawing !== this.drawing) return;
    const byStep = new Map(answer.steps.map((s) => [s.step, s]));
    const current = byStep.get(at.step);
    const rank = choice.startsWith('rank') ? Number(choice.slice(4)) : null;
    const shown = current?.class ?? (choice === 'label' || rank ? null : Number(choice));
    const column = at.chosen?.classes?.[probe]?.indexOf(shown) ?? -1;
    const p = column >= 0 ? at.chosen.probabilities[probe][column] : undefined;
    now.textContent = `${name} at step ${at.step}: predicted ${className(predicted)} · ` +
      `map of ${className(shown)}${shown !== null && shown !== undefined && shown >= 0 ? ` (${shown})` : ''}` +
      (p !== undefined ? ` · p = ${fmt(p)}` : '') +
      (current?.source === 'label' ? ' (the label)' : current?.source === 'predicted' ? ' (the predicted class)' : '') +
      (rank ? ` · ${ordinal(rank)} highest score` : '');
    const probeImages = this.app.data?.probe_images;
    let base = null;
    if (probeImages?.tag && probeImages.steps.length) {
      const kept = probeImages.steps.filter((s) => s <= at.step);
      const probeStep = kept.length ? kept[kept.length - 1] : probeImages.steps[0];
      try {
        base = await loadImage(imageUrl(run, probeImages.tag, probeStep, probe));
      } catch (err) {
        base = null;
      }
    }
    if (drawing !== this.drawing) return;
    if (current?.map) {
      drawMap(image, base, current.map, answer);
      // Small probes (digits) scaled up to about 192 px, pixels kept sharp by the CSS.
      const scale = Math.max(1, Math.floor(192 / Math.max(image.width, image.height)));
      image.style.width = `${image.width * scale}px`;
      image.title = `${m.method} of ${className(shown)} for ${name} at step ${at.step}`;
    } else {
      image.hidden = true;
      missing.hidden = false;
      missing.textContent = rank ? `The ${ordinal(rank)} highest score was not logged at this ` +
        `step: log it with attribution_top_k=${rank} (tb-activations log --attribution-top-k ${rank}).` :
        shown === null || shown === undefined ? 'No map of this class at this step.' : howTo(shown);
    }
    const frames = steps.filter((s) => s <= at.step).map((s) => {
      const entry = byStep.get(s);
      const thumb = el('canvas', {class: 'tba-explain-thumb', title: `step ${s}`, dataset: {step: String(s)}});
      if (entry?.map) {
        drawMap(thumb, base, entry.map, answer);
        thumb.style.height = `${THUMB_HEIGHT}px`;
      } else {
        thumb.width = 1;
        thumb.height = 1;
      }
      return el('figure', {class: 'tba-explain-frame'}, thumb,
        el('figcaption', {class: 'tba-caption',
          text: !entry?.map ? `${s}: not logged` : rank ? `${s}: ${className(entry.class)}` : `${s}`}));
    });
    setChildren(history, ...frames);
  }

  show(img, src) {
    loadImage(src).then((loaded) => { img.src = loaded.src; }, () => { img.alt += ' (not available)'; });
  }
}
