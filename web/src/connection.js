// One WebSocket to the hub that comes back by itself: quick retries, then
// exponential backoff with jitter, an application ping to notice a dead link, and a visible state.
import { encodeFrame, pingFrame } from './frames.js';

const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
/** A connection attempt that has not opened by then is given up and retried. */
const OPEN_WITHIN_MS = 6000;
/** Retries about a second apart, this many, before the delays grow. */
export const QUICK_TRIES = 16;
const CAP_MS = 30000;

/**
 * Delay before reconnect attempt `n` (0-based). A hub that restarts (an
 * upgrade, `systemctl restart`) is back within seconds, so the page is too:
 * a first retry after 0.1-0.25 s, then one every 0.75-1.25 s for 11 to
 * 19 seconds, so that it is back within about a second of the hub
 * answering again. Only then does it back off: doubling from 2 s to 30 s,
 * half of each delay random ("equal jitter"). The jitter keeps the phones
 * of a room from retrying in step.
 */
export function backoffDelay(n, random = Math.random) {
  if (n <= 0) return Math.round(100 + random() * 150);
  if (n < QUICK_TRIES) return Math.round(750 + random() * 500);
  const ceiling = Math.min(CAP_MS, 2000 * 2 ** Math.min(n - QUICK_TRIES, 15));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export class Connection {
  /**
   * `handlers`: onOpen(), onFrame(object), onState({state, retryAt, reason}),
   * onClose(code). States: connecting, connected, reconnecting, offline.
   */
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.timer = 0;
    this.pingTimer = 0;
    this.pongTimer = 0;
    this.stopped = true;
    this.onOnline = () => this.now();
    this.onVisible = () => {
      if (document.visibilityState === 'visible') this.now();
    };
  }

  start() {
    this.stopped = false;
    addEventListener('online', this.onOnline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.open();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this.onOnline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearTimeout(this.timer);
    this.stopTimers();
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
  }

  /** The connection works end to end (the room was joined): forget past failures. */
  healthy() {
    this.attempt = 0;
  }

  get isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a frame; false when there is no open connection. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(encodeFrame(frame));
    return true;
  }

  /** Reconnects at once if waiting for a retry (the network came back, the tab became visible). */
  now() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.timer);
    this.open();
  }

  open() {
    this.h.onState({ state: this.attempt ? 'reconnecting' : 'connecting' });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.retry(0);
      return;
    }
    this.ws = ws;
    // A hub that is down or unreachable may leave the attempt hanging: give it up in time.
    this.pongTimer = setTimeout(() => ws.close(), OPEN_WITHIN_MS);
    ws.onopen = () => {
      clearTimeout(this.pongTimer);
      this.h.onState({ state: 'connected' });
      this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
      this.h.onOpen();
    };
    ws.onmessage = (ev) => {
      clearTimeout(this.pongTimer);
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame.type === 'string' && frame.type !== 'pong') this.h.onFrame(frame);
    };
    ws.onclose = (ev) => {
      this.ws = null;
      this.stopTimers();
      this.h.onClose(ev.code);
      this.retry(ev.code);
    };
  }

  ping() {
    if (!this.send(pingFrame())) return;
    clearTimeout(this.pongTimer);
    // Nothing at all back within the window: the link is dead without a FIN.
    this.pongTimer = setTimeout(() => this.ws && this.ws.close(4000), PONG_WITHIN_MS);
  }

  stopTimers() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  retry(code) {
    if (this.stopped) return;
    const offline = navigator.onLine === false;
    const delay = backoffDelay(this.attempt++);
    this.h.onState({ state: offline ? 'offline' : 'reconnecting', retryAt: Date.now() + delay, code });
    this.timer = setTimeout(() => this.open(), delay);
  }
}
