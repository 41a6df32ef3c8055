// Small DOM and storage helpers shared by the page's modules.

/** The element with id `id`. */
export const $ = (id) => document.getElementById(id);

/** A new element `tag` with class `cls` and text `text` (both optional). */
export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A button of type "button" with class `cls`, text `text` and click handler `onclick`. */
export function button(cls, text, onclick) {
  const b = el('button', cls, text);
  b.type = 'button';
  if (onclick) b.onclick = onclick;
  return b;
}

/** localStorage that shrugs off private modes and full quotas. */
export const store = {
  get: (k) => { try { return localStorage.getItem(k); } catch { return null; } },
  set: (k, v) => { try { localStorage.setItem(k, v); } catch { /* private mode */ } },
  remove: (k) => { try { localStorage.removeItem(k); } catch { /* private mode */ } },
};

/** sessionStorage, the same way: what this tab should come back to after a reload. */
export const tabStore = {
  get: (k) => { try { return sessionStorage.getItem(k); } catch { return null; } },
  set: (k, v) => { try { sessionStorage.setItem(k, v); } catch { /* ignore */ } },
  remove: (k) => { try { sessionStorage.removeItem(k); } catch { /* ignore */ } },
};
