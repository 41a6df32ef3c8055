// What the hub says about itself: in hub.json, the largest frame it accepts
// and, for a page opened on the hub itself, its network names for invites;
// in /health, whether it keeps history for catch-up (PROTOCOL.md section 7).

/** The hub's figures; the defaults hold until hub.json answers. */
export const hub = { max_message_bytes: 10240, hostname: null, addresses: [], history: true };

/** Bytes of the largest WebSocket message the hub accepts. */
export const frameLimit = () => Number(hub.max_message_bytes) || 10240;

async function getJson(url) {
  const r = await fetch(url, { cache: 'no-store' });
  return r.ok ? r.json() : null;
}

let loaded = null;

/**
 * Fetches hub.json into `hub`, and learns from /health whether the hub keeps
 * history: one that reports no `history_rooms` predates catch-up and never
 * ends a replay with a `history` frame. Keeps the defaults when either fails.
 * The same promise for every caller.
 */
export function loadHubInfo() {
  loaded ||= Promise.all([
    getJson('hub.json').then((j) => j && Object.assign(hub, j, { history: hub.history })).catch(() => {}),
    getJson('../health').then((j) => {
      if (j && j.stats && typeof j.stats === 'object') hub.history = 'history_rooms' in j.stats;
    }).catch(() => {}),
  ]);
  return loaded;
}
