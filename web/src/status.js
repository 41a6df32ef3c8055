// The owner's status page: /health every 2 s, in plain words, with a
// sparkline and its time scale per figure, and an outage shown as one.
import {
  EVERY_MS, POINTS, HourCount, bytes, duration, memoryVerdict, queueVerdict, spanLabel,
} from './status-data.js';

const NS = 'http://www.w3.org/2000/svg';
const hour = new HourCount();
const clock = (t) => new Date(t).toLocaleTimeString();
const of = (v, max) => `${v}${max ? ` of ${max}` : ''}`;

/** Tiles: id, title, the value (`read`, shown by `show`), the sentence under it (`say` or a `verdict`), what the sparkline plots. */
const TILES = [
  {
    id: 'people', title: 'People online now', read: (st) => st.total_users, show: String,
    say: (st) => `in ${st.active_rooms} room${st.active_rooms === 1 ? '' : 's'} (each open chat tab counts)`,
  },
  {
    id: 'messages', title: 'Messages', read: () => hour.count(), show: String, plot: () => hour.lastStep,
    say: (st) => `${hour.covers()}; ${st.messages_relayed} since the hub started`,
  },
  {
    id: 'pages', title: 'Chat pages connected', read: (st) => st.active_connections, show: (v, st) => of(v, st.max_connections),
    say: () => 'open chat tabs, phones and computers talking to the hub',
  },
  {
    id: 'memory', title: 'Memory used', read: (st) => st.rss_bytes || 0, show: bytes,
    verdict: (st) => memoryVerdict(st.rss_bytes || 0, st.memory_bound_bytes), meter: true,
  },
  {
    id: 'waiting', title: 'Waiting to be sent', read: (st) => st.queued_bytes || 0, show: bytes,
    verdict: (st) => queueVerdict(st.queued_bytes || 0),
  },
  {
    id: 'uptime', title: 'Running for', read: (st) => st.uptime_seconds, show: (v) => duration(v),
    say: () => 'since the hub last started', spark: false,
  },
];

const series = new Map(TILES.map((t) => [t.id, []]));
let lastGood = 0;
let downSince = 0;

const make = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function tile(t) {
  let li = document.getElementById(`t-${t.id}`);
  if (li) return li;
  li = make('li', 'tile');
  li.id = `t-${t.id}`;
  li.append(make('h2', '', t.title), make('p', 'v'), make('p', 'hint say'));
  if (t.meter) {
    const meter = make('div', 'meter');
    meter.setAttribute('role', 'meter');
    meter.setAttribute('aria-label', 'Memory used against the most the hub can need');
    meter.setAttribute('aria-valuemin', '0');
    meter.setAttribute('aria-valuemax', '100');
    meter.append(make('span'));
    li.append(meter);
  }
  if (t.spark !== false) {
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${POINTS - 1} 40`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('aria-hidden', 'true');
    svg.append(document.createElementNS(NS, 'polyline'));
    const axis = make('p', 'axis');
    axis.setAttribute('aria-hidden', 'true');
    axis.append(make('span', 'from'), make('span', '', 'now'));
    li.append(svg, axis);
  }
  li.append(make('p', 'stale-note', 'last known value'));
  document.getElementById('tiles').append(li);
  return li;
}

function draw(t, st) {
  const li = tile(t);
  const v = t.read(st);
  const values = series.get(t.id);
  values.push(t.plot ? t.plot(st) : v);
  if (values.length > POINTS) values.shift();
  li.querySelector('.v').textContent = t.show(v, st);
  const [level, sentence] = t.verdict ? t.verdict(st) : ['', t.say(st)];
  const say = li.querySelector('.say');
  say.textContent = sentence;
  li.dataset.level = level;
  const meter = li.querySelector('.meter');
  if (meter && st.memory_bound_bytes) {
    const pct = Math.min(100, (100 * (st.rss_bytes || 0)) / st.memory_bound_bytes);
    meter.setAttribute('aria-valuenow', pct.toFixed(0));
    meter.firstChild.style.width = `${pct}%`;
  }
  const line = li.querySelector('polyline');
  if (!line) return;
  // Newest at the right; the full width is POINTS polls, so the scale holds still.
  const max = Math.max(1, ...values);
  const x0 = POINTS - values.length;
  line.setAttribute('points', values.map((y, i) => `${x0 + i},${(38 - (y / max) * 36).toFixed(1)}`).join(' '));
  li.querySelector('.axis .from').textContent = spanLabel(POINTS);
}

function showDown(why) {
  const now = Date.now();
  downSince ||= now;
  document.body.classList.add('down');
  const state = document.getElementById('state');
  state.dataset.state = 'down';
  const last = lastGood ? ` The figures below are the last it gave, at ${clock(lastGood)}.` : '';
  state.textContent = `${why} (since ${clock(downSince)}, ${duration((now - downSince) / 1000)}).${last} Retrying every 2 s.`;
  const up = document.getElementById('t-uptime');
  if (up) {
    up.querySelector('.v').textContent = 'not running';
    up.querySelector('.say').textContent = `not answering for ${duration((now - downSince) / 1000)}`;
  }
}

async function refresh() {
  let body;
  try {
    const r = await fetch('../health', { cache: 'no-store' });
    body = await r.json();
  } catch {
    showDown('The hub is not answering');
    return;
  }
  if (body.status !== 'healthy') {
    showDown(body.status === 'shutting_down' ? 'The hub is shutting down or restarting' : `The hub reports "${String(body.status).slice(0, 40)}"`);
    return;
  }
  const st = body.stats || {};
  const now = Date.now();
  hour.add(Number(st.messages_relayed) || 0, now);
  for (const t of TILES) draw(t, st);
  lastGood = now;
  downSince = 0;
  document.body.classList.remove('down');
  const state = document.getElementById('state');
  state.dataset.state = 'up';
  state.textContent = `The hub is running. Updated ${clock(now)}, every 2 seconds.`;
}

refresh();
setInterval(refresh, EVERY_MS);
