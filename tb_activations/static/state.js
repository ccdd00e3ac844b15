// What the dashboard shows: one plain object, changed only by the Dashboard,
// and its copy in the URL so that a view can be shared.
//
// Inside TensorBoard the state lives in TensorBoard's own URL hash as
// `p.activations.<key>=<value>` entries (the keys TensorBoard's plugin API
// reserves for a plugin: `#activations&p.activations.layer=conv_b&...`),
// written with history.replaceState so that TensorBoard does not navigate.
// Opened on its own, the page uses its own hash the same way.

const PREFIX = 'p.activations.';
// URL key -> [state field, parser]
const FIELDS = {
  run: ['run', String],
  layer: ['layerName', String],
  probe: ['probe', Number],
  step: ['step', Number],
  channel: ['channel', Number],
  compare: ['compareMode', String],
  cstep: ['compareStep', Number],
  crun: ['compareRun', String],
  overview: ['overview', String],
};

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
    overview: 'off', // 'off' | 'layers' | 'probes'
  };
}

/** The window whose URL holds the state: TensorBoard's page when readable, else this one. */
function urlWindow() {
  try {
    if (window.parent !== window && window.parent.location.href) return window.parent;
  } catch (err) {
    // cross-origin parent: keep the state in this frame's URL
  }
  return window;
}

function hashEntries(win) {
  return win.location.hash.replace(/^#/, '').split('&').filter((e) => e);
}

/** The state fields found in the URL (`step` is a step, not an index). */
export function readUrlState() {
  const out = {};
  for (const entry of hashEntries(urlWindow())) {
    const eq = entry.indexOf('=');
    if (eq < 0) continue;
    const key = decodeURIComponent(entry.slice(0, eq));
    if (!key.startsWith(PREFIX)) continue;
    const field = FIELDS[key.slice(PREFIX.length)];
    if (!field) continue;
    const value = field[1](decodeURIComponent(entry.slice(eq + 1)));
    if (field[1] === Number && !Number.isInteger(value)) continue;
    out[field[0]] = value;
  }
  if (out.compareMode && !['off', 'step', 'run'].includes(out.compareMode)) delete out.compareMode;
  if (out.overview && !['off', 'layers', 'probes'].includes(out.overview)) delete out.overview;
  return out;
}

/** Writes `state` (with the current `step`) into the URL, keeping every other hash entry. */
export function writeUrlState(state, step) {
  const win = urlWindow();
  const values = {...state, step};
  const ours = [];
  for (const [key, [field]] of Object.entries(FIELDS)) {
    const value = values[field];
    if (value === null || value === undefined || value === 'off') continue;
    ours.push(`${encodeURIComponent(PREFIX + key)}=${encodeURIComponent(String(value))}`);
  }
  const others = hashEntries(win).filter((e) => !decodeURIComponent(e.split('=')[0]).startsWith(PREFIX));
  const hash = `#${[...others, ...ours].join('&')}`;
  if (hash === win.location.hash || (hash === '#' && !win.location.hash)) return;
  try {
    const target = new URL(win.location.href);
    target.hash = hash;
    win.history.replaceState(win.history.state, '', target.toString());
  } catch (err) {
    // A sandboxed or foreign page: sharing by URL is unavailable, nothing else changes.
  }
}
