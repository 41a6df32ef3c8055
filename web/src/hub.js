// What the hub says about itself in hub.json: the largest frame it accepts and,
// for a page opened on the hub itself, its network names for invites.

/** The hub's figures; the defaults hold until hub.json answers. */
export const hub = { max_message_bytes: 10240, hostname: null, addresses: [] };

/** Bytes of the largest WebSocket message the hub accepts. */
export const frameLimit = () => Number(hub.max_message_bytes) || 10240;

/** Fetches hub.json into `hub`; keeps the defaults when it fails. */
export async function loadHubInfo() {
  try {
    const r = await fetch('hub.json', { cache: 'no-store' });
    if (r.ok) Object.assign(hub, await r.json());
  } catch { /* the defaults will do */ }
}
