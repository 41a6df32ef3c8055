// Unread signals without the Notification API (unavailable on a plain-http page):
// a count in the tab title, a badge on the favicon, an optional tone and vibration.

let baseIcon = null;
let audio = null;

function drawBadge(count) {
  const link = document.getElementById('favicon');
  if (!link) return;
  baseIcon ??= link.href;
  if (!count) {
    link.href = baseIcon;
    return;
  }
  const c = document.createElement('canvas');
  c.width = c.height = 32;
  const g = c.getContext('2d');
  if (!g) return;
  g.fillStyle = '#1d6b58';
  g.beginPath();
  g.roundRect(0, 0, 32, 32, 7);
  g.fill();
  g.fillStyle = '#d93025';
  g.beginPath();
  g.arc(21, 11, 11, 0, Math.PI * 2);
  g.fill();
  g.fillStyle = '#fff';
  g.font = 'bold 15px sans-serif';
  g.textAlign = 'center';
  g.textBaseline = 'middle';
  g.fillText(count > 9 ? '9+' : String(count), 21, 12);
  link.href = c.toDataURL('image/png');
}

/** Shows `count` unread messages in the title and the favicon. */
export function showUnread(count, title) {
  document.title = count ? `(${count}) ${title}` : title;
  drawBadge(count);
}

/** Prepares the tone; must run inside a user gesture (the checkbox click). */
export function armSound() {
  if (audio) return;
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (Ctx) audio = new Ctx();
}

/** A short two-note tone. */
export function chime() {
  if (!audio) return;
  const t = audio.currentTime;
  const gain = audio.createGain();
  gain.connect(audio.destination);
  gain.gain.setValueAtTime(0.0001, t);
  gain.gain.exponentialRampToValueAtTime(0.15, t + 0.02);
  gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.35);
  [660, 880].forEach((f, i) => {
    const o = audio.createOscillator();
    o.frequency.value = f;
    o.connect(gain);
    o.start(t + i * 0.12);
    o.stop(t + 0.35);
  });
}

export const buzz = () => navigator.vibrate?.([80, 60, 80]);
