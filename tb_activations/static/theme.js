// Follows TensorBoard's theme: TensorBoard 2.21 toggles the class `dark-mode`
// on its own document's body (its dark-mode toggle, or the device setting);
// the plugin frame is same-origin, so the module reads and observes it. Opened
// on its own (no TensorBoard around it), the page follows prefers-color-scheme.

/** TensorBoard's body, or null when there is no readable TensorBoard page around this frame. */
function parentBody() {
  try {
    if (window.parent === window) return null;
    return window.parent.document.body; // throws when cross-origin
  } catch (err) {
    return null;
  }
}

/** Whether the dashboard should be dark now. */
export function isDark() {
  const body = parentBody();
  if (body) return body.classList.contains('dark-mode');
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ?? false;
}

/** Keeps the class `tba-dark` of `root` (default: <html>) in step with TensorBoard's theme. */
export function followTheme(root = document.documentElement) {
  const apply = () => root.classList.toggle('tba-dark', isDark());
  apply();
  const body = parentBody();
  if (body) {
    new MutationObserver(apply).observe(body, {attributes: true, attributeFilter: ['class']});
  } else {
    window.matchMedia?.('(prefers-color-scheme: dark)').addEventListener?.('change', apply);
  }
}
