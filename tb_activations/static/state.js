// What the dashboard shows: one plain object, changed only by the Dashboard.

/** A fresh view state: nothing chosen yet. */
export function initialState() {
  return {
    run: null, // run name
    layerName: null, // layer path
    probe: 0, // probe index
    stepIndex: 0, // index into the layer's kept steps
    channel: null, // opened channel, or null
    compareMode: 'off', // 'off' | 'step' | 'run'
    compareStep: null,
    compareRun: null,
  };
}
