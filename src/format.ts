/**
 * Formatting of sizes, percentages, digests and labels. Pure functions: no
 * JupyterLab imports, so that jest tests them directly.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/**
 * Bytes in binary units, as Docker's memory limits are written (`4g` is 4
 * GiB): `formatBytes(1536)` → `"1.5 KiB"`; `"—"` for null or a bad number.
 */
export function formatBytes(
  bytes: number | null | undefined,
  fractionDigits?: number
): string {
  if (bytes === null || bytes === undefined || !isFinite(bytes) || bytes < 0) {
    return '—';
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) {
    return `${Math.round(value)} B`;
  }
  const digits = fractionDigits ?? (value >= 100 ? 0 : value >= 10 ? 1 : 2);
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/**
 * A percentage: one decimal under 10 %, none above (`"0.3%"`, `"42%"`); `"—"`
 * for null.
 */
export function formatPercent(percent: number | null | undefined): string {
  if (percent === null || percent === undefined || !isFinite(percent)) {
    return '—';
  }
  const abs = Math.abs(percent);
  const text =
    abs > 0 && abs < 10 ? percent.toFixed(1) : Math.round(percent).toString();
  return `${text}%`;
}

/**
 * `used / total` as a fraction in [0, 1], or null when unknown.
 */
export function ratio(
  used: number | null | undefined,
  total: number | null | undefined
): number | null {
  if (
    used === null ||
    used === undefined ||
    total === null ||
    total === undefined ||
    !isFinite(used) ||
    !isFinite(total) ||
    total <= 0
  ) {
    return null;
  }
  return Math.min(1, Math.max(0, used / total));
}

/**
 * The hex part of a digest or image id, cut to `length` characters:
 * `"sha256:4f0c…"` → `"4f0c1a2b3c4d"`; a `repo@sha256:…` reference works too.
 */
export function shortDigest(
  digest: string | null | undefined,
  length = 12
): string {
  if (!digest) {
    return '';
  }
  const at = digest.lastIndexOf('@');
  const ref = at >= 0 ? digest.slice(at + 1) : digest;
  const colon = ref.indexOf(':');
  const hex = colon >= 0 ? ref.slice(colon + 1) : ref;
  return hex.slice(0, length);
}

/**
 * The `sha256:…` part of a digest or `repo@sha256:…` reference.
 */
export function bareDigest(digest: string | null | undefined): string | null {
  if (!digest) {
    return null;
  }
  const at = digest.lastIndexOf('@');
  return at >= 0 ? digest.slice(at + 1) : digest;
}

/**
 * The CUDA version as the status bar shows it: `"12.5.1"` → `"CUDA 12.x"`;
 * null when unknown.
 */
export function cudaLabel(version: string | null | undefined): string | null {
  if (!version) {
    return null;
  }
  const major = version.trim().split('.')[0];
  return /^\d+$/.test(major) ? `CUDA ${major}.x` : `CUDA ${version}`;
}

/**
 * Compare two dotted version strings numerically (`"2.9" < "2.10"`);
 * non-numeric parts compare as text; missing versions sort last.
 */
export function compareVersions(
  a: string | null | undefined,
  b: string | null | undefined
): number {
  if (!a && !b) {
    return 0;
  }
  if (!a) {
    return 1;
  }
  if (!b) {
    return -1;
  }
  const pa = a.split(/[.+-]/);
  const pb = b.split(/[.+-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    if (x === y) {
      continue;
    }
    const nx = Number(x);
    const ny = Number(y);
    if (x !== '' && y !== '' && !isNaN(nx) && !isNaN(ny)) {
      return nx - ny;
    }
    return x < y ? -1 : 1;
  }
  return 0;
}

/**
 * The tag or digest part of an image reference:
 * `"tensorflow/tensorflow:2.20.0-jupyter"` → `"2.20.0-jupyter"`.
 */
export function imageTag(image: string): string {
  const at = image.indexOf('@');
  if (at >= 0) {
    return image.slice(at + 1);
  }
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  return colon > slash ? image.slice(colon + 1) : '';
}

/**
 * `text` cut after each separator of image references, paths and code
 * (`/`, `:`, `@`, `,`, `(`, `[`): a view puts a line-break opportunity (`<wbr>`)
 * between the parts, so that a long value wraps at a separator rather than
 * in the middle of a word (or is cut off). Joined, the parts are `text`.
 */
export function breakableParts(text: string): string[] {
  return text.match(/[^/:@,([]*(?:[/:@,([]+|$)/g)?.filter(part => part) ?? [];
}
