// The invite's QR code as an SVG (built with DOM calls: no markup strings, so
// nothing for the Content-Security-Policy to object to).
import encodeQR from 'qr';

const NS = 'http://www.w3.org/2000/svg';

/** An <svg> element with the QR code of `text` (quiet zone of 4 modules). */
export function qrSvg(text) {
  const grid = encodeQR(text, 'raw', { ecc: 'medium' });
  const n = grid.length;
  let d = '';
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) if (grid[y][x]) d += `M${x + 4} ${y + 4}h1v1h-1z`;
  }
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${n + 8} ${n + 8}`);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('shape-rendering', 'crispEdges');
  const path = document.createElementNS(NS, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(path);
  return svg;
}
