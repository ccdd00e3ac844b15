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
    this.search = el('input', {type: 'search', id: 'tba-layer-search', placeholder: 'filter layers ( / )',
      'aria-label': 'filter layers by name or class', oninput: () => this.filter(),
      onkeydown: (e) => {
        if (e.key !== 'Enter') return;
        const first = this.visible()[0];
        if (first && first.layer !== app.state.layerName) app.selectLayer(first.layer);
      }});
    this.refreshButton = el('button', {type: 'button', id: 'tba-refresh', text: 'Reload',
      title: 'Read the log directory again', onclick: () => app.reload()});
    this.root = el('div', {class: 'tba-controls'},
      field('Run', this.runSelect), field('Probe', this.probeSelect), field('Layer', this.layerSelect),
      this.search, this.refreshButton);
    this.layers = [];
  }

  /** The layers matching the search box (name or class, case-insensitive), in model order. */
  visible() {
    const query = this.search.value.trim().toLowerCase();
    if (!query) return this.layers;
    return this.layers.filter((l) => `${l.layer} ${l.class_name}`.toLowerCase().includes(query));
  }

  /** Re-lists the layer select after the search box changed; the chosen layer stays listed. */
  filter() {
    const chosen = this.app.state.layerName;
    const shown = this.visible();
    const list = shown.some((l) => l.layer === chosen) ? shown
      : this.layers.filter((l) => l.layer === chosen || shown.includes(l));
    setOptions(this.layerSelect, list.map((l) => [l.layer, layerLabel(l)]), chosen);
    this.search.classList.toggle('tba-nomatch', this.search.value !== '' && !shown.length);
  }

  /** The layer `delta` places after `name` among the listed ones, or null. */
  neighbour(name, delta) {
    const names = [...this.layerSelect.options].map((o) => o.value);
    const i = names.indexOf(name) + delta;
    return i >= 0 && i < names.length ? names[i] : null;
  }

  /** The runs to choose from, keeping `selected`. */
  setRuns(runs, selected) {
    setOptions(this.runSelect, runs.map((r) => [r, r]), selected);
  }

  /** The layers of the current run (`/layers` answer), keeping `selected`. */
  setLayers(layers, selected) {
    this.layers = layers;
    setOptions(this.layerSelect, layers.map((l) => [l.layer, layerLabel(l)]), selected);
    if (this.search.value) this.filter();
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
