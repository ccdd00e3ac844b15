// The Activations dashboard: entry module loaded by TensorBoard's
// data/plugin_entry.html?name=activations, which calls render().
//
// Plain ES modules, no build step, nothing from outside TensorBoard's origin
// (its Content-Security-Policy allows same-origin scripts and fetches only).
// Names from the log directory reach the page through textContent only.
//
// One module per panel (static/*.js); dashboard.js says what a panel is.
// A new panel: write its module, import it here and add it to PANELS.

import {ChannelPanel} from './static/channel.js';
import {Dashboard} from './static/dashboard.js';
import {el} from './static/dom.js';
import {DriftPanel} from './static/drift.js';
import {ChannelsPanel, ExamplesPanel} from './static/examples.js';
import {ExplainPanel} from './static/explain.js';
import {HistogramPanel} from './static/histogram.js';
import {MosaicPanel} from './static/mosaic.js';
import {OverviewPanel} from './static/overview.js';
import {PredictionsPanel} from './static/predictions.js';
import {StripsPanel} from './static/strips.js';
import {followTheme} from './static/theme.js';

export {cellRect, channelAt} from './static/geometry.js';

/** The panels, in page order within their column (each panel names its column). */
export const PANELS = [
  MosaicPanel, ChannelPanel, ExamplesPanel, OverviewPanel, StripsPanel, ChannelsPanel, DriftPanel, HistogramPanel, PredictionsPanel,
  ExplainPanel,
];

/** Renders the dashboard into document.body. Called once by TensorBoard. */
export async function render() {
  const style = el('link', {rel: 'stylesheet', href: new URL('./static/style.css', import.meta.url).href});
  document.head.append(style);
  followTheme();
  const app = new Dashboard(document.body, PANELS);
  window.__tbActivations = app; // handy from the devtools console
  await app.start();
}
