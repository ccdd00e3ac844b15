// The top bar: run, probe and layer choice, and the reload button.

import {el, setOptions} from './dom.js';

/** `3. conv_b — Conv2D 8×8×6`: how a layer is named in the layer list. */
export function layerLabel(layer) {
  const [h, w, c] = layer.shape;
  return `${layer.index}. ${layer.layer} — ${layer.class_name} ${h}×${w}×${c}`;
}

/** Run, probe and layer selects; they call back into the dashboard `app`. */
export class LayerControls {
  constructor(app) {
    this.app = app;
    const field = (label, control) => el('label', {class: 'tba-field'}, el('span', {text: label}), control);
    this.runSelect = el('select', {id: 'tba-run', onchange: () => app.selectRun(this.runSelect.value)});
    this.probeSelect = el('select', {id: 'tba-probe', onchange: () => app.selectProbe(Number(this.probeSelect.value))});
    this.layerSelect = el('select', {id: 'tba-layer', onchange: () => app.selectLayer(this.layerSelect.value)});
    this.refreshButton = el('button', {type: 'button', id: 'tba-refresh', text: 'Reload',
      title: 'Read the log directory again', onclick: () => app.reload()});
    this.root = el('div', {class: 'tba-controls'},
      field('Run', this.runSelect), field('Probe', this.probeSelect), field('Layer', this.layerSelect),
      this.refreshButton);
  }

  /** The runs to choose from, keeping `selected`. */
  setRuns(runs, selected) {
    setOptions(this.runSelect, runs.map((r) => [r, r]), selected);
  }

  /** The layers of the current run (`/layers` answer), keeping `selected`. */
  setLayers(layers, selected) {
    setOptions(this.layerSelect, layers.map((l) => [l.layer, layerLabel(l)]), selected);
  }

  /** Shows `run` and `layer` as chosen, and the probes of `layer` with `probe` chosen. */
  showSelection(run, layer, probe) {
    if (run !== null) this.runSelect.value = run;
    if (!layer) return;
    this.layerSelect.value = layer.layer;
    setOptions(this.probeSelect, layer.probes.map((p, i) => {
      const label = layer.labels && layer.labels[i] ? `${p} (${layer.labels[i]})` : p;
      return [String(i), label];
    }), String(probe));
    this.probeSelect.value = String(probe);
  }
}
