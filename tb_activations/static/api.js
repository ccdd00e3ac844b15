// Fetches from the plugin's routes. URLs are relative to the page's
// <base href="plugin/activations/">, which TensorBoard's plugin_entry.html sets.

/** An HTTP error with the server's plain-text message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The URL of `route` with query parameters `params` (values are encoded). */
export function url(route, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) query.set(key, String(value));
  const qs = query.toString();
  return qs ? `${route}?${qs}` : route;
}

/** GETs JSON; rejects with an ApiError carrying the server's message. */
export async function getJson(route, params) {
  const response = await fetch(url(route, params), {credentials: 'same-origin'});
  if (!response.ok) throw new ApiError(response.status, (await response.text()) || response.statusText);
  return response.json();
}

/** URL of the history strip of `channel` of `layer` for probe `probe` at `steps` (GET /channel). */
export function channelUrl(run, layer, probe, channel, steps) {
  return url('channel', {run, layer, probe, channel, steps: steps.join(',')});
}

/** URL of one stored PNG: probe `index` of image `tag` at `step`. */
export function imageUrl(run, tag, step, index) {
  return url('image', {run, tag, step, index});
}

const imageCache = new Map(); // url -> Promise<HTMLImageElement>
const CACHE_LIMIT = 800;

/**
 * Loads an image once and keeps it decoded (for the slider, play and the
 * filmstrip). Resolves to an HTMLImageElement, or rejects with the server's message.
 */
export function loadImage(src) {
  let promise = imageCache.get(src);
  if (promise) {
    imageCache.delete(src); // re-insert: most recently used last
    imageCache.set(src, promise);
    return promise;
  }
  promise = (async () => {
    const response = await fetch(src, {credentials: 'same-origin'});
    if (!response.ok) throw new ApiError(response.status, (await response.text()) || response.statusText);
    const blob = await response.blob();
    const img = new Image();
    img.src = URL.createObjectURL(blob);
    await img.decode();
    // Steps a /channel strip could not fill (transparent frames).
    const missing = response.headers.get('X-Missing-Steps');
    img.missingSteps = missing ? missing.split(',').map(Number) : [];
    return img;
  })();
  promise.catch(() => imageCache.delete(src));
  imageCache.set(src, promise);
  while (imageCache.size > CACHE_LIMIT) {
    const oldest = imageCache.keys().next().value;
    const old = imageCache.get(oldest);
    imageCache.delete(oldest);
    old.then((img) => URL.revokeObjectURL(img.src), () => {});
  }
  return promise;
}
