// The owner's status page: /health every 2 s, with a sparkline per figure.

const EVERY_MS = 2000;
const POINTS = 60;
const NS = 'http://www.w3.org/2000/svg';

const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
function duration(s) {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}

/** Tiles: label, how to read the value, how to show it. */
const TILES = [
  ['Connections', (st) => st.active_connections, (v, st) => `${v}${st.max_connections ? ` of ${st.max_connections}` : ''}`],
  ['Rooms', (st) => st.active_rooms, (v, st) => `${v}${st.max_rooms ? ` of ${st.max_rooms}` : ''}`],
  ['People in rooms', (st) => st.total_users, String],
  ['Messages per second', (st, prev, dt) => (prev && dt > 0 ? Math.max(0, (st.messages_relayed - prev.messages_relayed) / dt) : 0), (v) => v.toFixed(1)],
  ['Queued bytes', (st) => st.queued_bytes || 0, (v) => (v < 10240 ? `${v} B` : mib(v))],
  ['Memory (resident)', (st) => st.rss_bytes || 0, mib, true],
  ['Uptime', (st) => st.uptime_seconds, duration],
];

const series = TILES.map(() => []);
let prev = null;
let prevAt = 0;

function tile(i) {
  let li = document.getElementById(`t${i}`);
  if (li) return li;
  li = document.createElement('li');
  li.className = 'tile';
  li.id = `t${i}`;
  const h = document.createElement('h2');
  h.textContent = TILES[i][0];
  const v = document.createElement('p');
  v.className = 'v';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${POINTS - 1} 40`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('aria-hidden', 'true');
  svg.append(document.createElementNS(NS, 'polyline'));
  li.append(h, v, svg);
  if (TILES[i][3]) {
    const meter = document.createElement('div');
    meter.className = 'meter';
    meter.setAttribute('role', 'meter');
    meter.setAttribute('aria-label', 'Memory used against the bound');
    meter.setAttribute('aria-valuemin', '0');
    meter.setAttribute('aria-valuemax', '100');
    meter.append(document.createElement('span'));
    const cap = document.createElement('p');
    cap.className = 'hint cap';
    li.append(meter, cap);
  }
  document.getElementById('tiles').append(li);
  return li;
}

function draw(i, values, text, st) {
  const li = tile(i);
  li.querySelector('.v').textContent = text;
  const max = Math.max(1, ...values);
  // The history so far stretched over the width, newest at the right.
  const step = (POINTS - 1) / Math.max(1, values.length - 1);
  const pts = values.map((v, x) => `${(x * step).toFixed(2)},${(38 - (v / max) * 36).toFixed(1)}`);
  li.querySelector('polyline').setAttribute('points', pts.join(' '));
  const meter = li.querySelector('.meter');
  if (meter && st.memory_bound_bytes) {
    const pct = Math.min(100, (100 * (st.rss_bytes || 0)) / st.memory_bound_bytes);
    meter.setAttribute('aria-valuenow', pct.toFixed(0));
    meter.firstChild.style.width = `${pct}%`;
    li.querySelector('.cap').textContent = `${pct.toFixed(1)} % of the ${mib(st.memory_bound_bytes)} worst-case bound`;
  }
}

async function refresh() {
  const state = document.getElementById('state');
  try {
    const r = await fetch('../health', { cache: 'no-store' });
    const body = await r.json();
    const st = body.stats || {};
    const now = performance.now();
    const dt = (now - prevAt) / 1000;
    TILES.forEach(([, read, show], i) => {
      const v = read(st, prev, dt);
      series[i].push(v);
      if (series[i].length > POINTS) series[i].shift();
      draw(i, series[i], show(v, st), st);
    });
    prev = st;
    prevAt = now;
    state.textContent = body.status === 'healthy' ? `healthy, as of ${new Date().toLocaleTimeString()}` : `status: ${body.status}`;
  } catch {
    state.textContent = 'the hub does not answer; retrying…';
  }
}

refresh();
setInterval(refresh, EVERY_MS);
