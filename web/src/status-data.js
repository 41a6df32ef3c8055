// The owner's status page without the DOM: figures from successive /health
// answers, put in plain words with a verdict a Raspberry Pi owner can read.

/** Milliseconds between polls of /health. */
export const EVERY_MS = 2000;
/** Points in a sparkline (3 minutes at one poll every 2 s, both ends counted). */
export const POINTS = 91;
const HOUR_MS = 3600 * 1000;

/** Bytes for people: B, KiB, MiB. */
export function bytes(b) {
  if (b < 1024) return `${b} B`;
  if (b < 1048576) return `${(b / 1024).toFixed(1)} KiB`;
  return `${(b / 1048576).toFixed(1)} MiB`;
}

/** A duration in seconds for people: "7 min 52 s", "3 h 5 min", "2 d 4 h". */
export function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60 ? ` ${s % 60} s` : '';
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m ? `${m} min${sec}` : `${s} s`;
}

/** How long a sparkline of `points` polls covers, for its scale: "3 min ago", "40 s ago". */
export function spanLabel(points, everyMs = EVERY_MS) {
  const s = Math.round(((Math.max(points, 1) - 1) * everyMs) / 1000);
  return s ? `${duration(s)} ago` : 'now';
}

/**
 * Messages relayed in the last hour, from the hub's running total polled
 * again and again: the hub keeps no hourly figure, so the page counts what
 * it saw arrive. A total that goes down means the hub restarted (it counts
 * from zero again). Bounded: one entry a poll for an hour.
 */
export class HourCount {
  constructor(now = Date.now()) {
    this.since = now;
    this.last = null;
    this.lastStep = 0; // messages between the last two polls
    this.steps = []; // [time, messages since the poll before]
  }

  /** Takes the total `total` seen at `now`. */
  add(total, now = Date.now()) {
    if (this.last !== null) {
      const d = total >= this.last ? total - this.last : total;
      this.lastStep = d;
      if (d) this.steps.push([now, d]);
    }
    this.last = total;
    while (this.steps.length && (this.steps[0][0] <= now - HOUR_MS || this.steps.length > 4000)) this.steps.shift();
  }

  /** Messages counted in the hour before `now` (or since the page opened, if that is shorter). */
  count(now = Date.now()) {
    let n = 0;
    for (const [t, d] of this.steps) if (t > now - HOUR_MS) n += d;
    return n;
  }

  /** Whether the page has watched a whole hour. */
  full(now = Date.now()) {
    return now - this.since >= HOUR_MS;
  }

  /** What the count covers, in words. */
  covers(now = Date.now()) {
    return this.full(now) ? 'in the last hour' : `since this page opened ${duration((now - this.since) / 1000)} ago`;
  }
}

/** The memory verdict for `rss` against the hub's worst case `bound`: [level, sentence]. */
export function memoryVerdict(rss, bound) {
  if (!bound) return ['ok', `The hub uses ${bytes(rss)}.`];
  const pct = (100 * rss) / bound;
  const level = pct < 75 ? 'ok' : pct < 95 ? 'warn' : 'bad';
  const word = level === 'ok' ? 'This is fine.' : level === 'warn' ? 'Busier than usual, still within its limit.' : 'Close to its limit.';
  return [level, `${pct.toFixed(0)} % of the most it can ever need (${bytes(bound)}). ${word}`];
}

/** The verdict for bytes waiting to be sent to slow phones: [level, sentence]. */
export function queueVerdict(queued) {
  if (queued < 262144) return ['ok', 'Messages go out as fast as they come in. This is fine.'];
  return ['warn', 'Some phones take their messages slowly; the hub holds them for a moment.'];
}
