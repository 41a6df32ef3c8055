// scrypt off the main thread: the page stays responsive for the half second a
// phone needs. Message: {room, passphrase}; answer: {key} or {error}.
import { passphraseKey } from './envelope.js';

self.onmessage = (ev) => {
  try {
    const key = passphraseKey(ev.data.room, ev.data.passphrase);
    self.postMessage({ key }, [key.buffer]);
  } catch (e) {
    self.postMessage({ error: String(e && e.message) });
  }
};
