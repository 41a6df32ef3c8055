// The invite dialog: the link (the room key in the fragment, which never
// reaches the hub) with a copy button and a QR code; for a passphrase room,
// what to tell the others instead. Opened on the hub itself (localhost), it
// offers the hub's network names, which a phone can reach.
import { $, el } from './dom.js';
import { hub } from './hub.js';
import { encodeInvite } from './invitecode.js';
import { qrSvg } from './qrsvg.js';

/** Whether `h` names this machine only. */
export const isLoopback = (h) => h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || h === '[::1]';

/** Hosts (with port) others on the network can open the page at, best first. */
export function inviteHosts() {
  const port = location.port ? `:${location.port}` : '';
  if (!isLoopback(location.hostname)) return [location.host];
  const hosts = [];
  if (hub.hostname) hosts.push(`${hub.hostname}${port}`);
  for (const a of hub.addresses || []) hosts.push(a.includes(':') ? `[${a}]${port}` : `${a}${port}`);
  return hosts.length ? hosts : [location.host];
}

/** The invite link of room key `key` at `host`. */
export const inviteLink = (host, key) => `${location.protocol}//${host}${location.pathname}#${encodeInvite(key)}`;

let current = null;

function renderInvite() {
  const host = $('host-select').value || inviteHosts()[0];
  const link = inviteLink(host, current.key);
  $('invite-link').value = link;
  $('qr').replaceChildren(qrSvg(link));
}

/** Opens the invite dialog for `room` ({key, roomName}). */
export function openInvite(room) {
  current = room;
  const byLink = !room.roomName;
  for (const id of ['invite-link', 'copy', 'qr']) $(id).closest('.row, .qr').hidden = !byLink;
  $('invite-link-label').hidden = !byLink;
  $('invite-help').textContent = byLink
    ? 'Anyone with this link can read and write in the room. Share it only with people you trust.'
    : `Tell them the room name "${room.roomName}" and the passphrase, away from this chat.`;
  if (!byLink) {
    $('host-choice').hidden = true;
    $('copied').textContent = '';
    $('invite').showModal();
    return;
  }
  const hosts = inviteHosts();
  const select = $('host-select');
  select.replaceChildren(...hosts.map((h) => el('option', '', h)));
  $('host-choice').hidden = !isLoopback(location.hostname) || hosts.length < 2;
  $('copied').textContent = isLoopback(location.hostname) && hosts[0] === location.host
    ? 'This address works only on the hub itself; the hub reported no network address.'
    : '';
  renderInvite();
  $('invite').showModal();
}

function copyInvite() {
  const input = $('invite-link');
  input.focus();
  input.select();
  // The clipboard API needs a secure context; execCommand works on plain http.
  const ok = document.execCommand('copy');
  $('copied').textContent = ok ? 'Copied.' : 'Select the link and copy it by hand.';
}

/** Wires the dialog's controls. */
export function initInvite() {
  $('copy').onclick = copyInvite;
  $('host-select').onchange = renderInvite;
}
