/**
 * How documents are named and described in the panel and the tabs: a title
 * when the document has one, sizes and times a person reads at a glance.
 */
import { Time } from '@jupyterlab/coreutils';

/** The first 8 characters of a document id: the name of a document without a title. */
export function shortId(documentId: string): string {
  return documentId.slice(0, 8);
}

/** Longest title shown; the full one is in the tooltip. */
const MAX_TITLE = 80;

/** A title fit for one line: whitespace collapsed, at most 80 characters, null when blank. */
export function cleanTitle(title: unknown): string | null {
  if (typeof title !== 'string') {
    return null;
  }
  const line = title.replace(/\s+/g, ' ').trim();
  if (!line) {
    return null;
  }
  return line.length > MAX_TITLE ? `${line.slice(0, MAX_TITLE - 1)}…` : line;
}

/** "0 B", "999 B", "1.2 KiB", "3.4 MiB": what the file browser shows. */
export function formatSize(bytes: number | null | undefined): string {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) {
    return '';
  }
  if (bytes < 1024) {
    return `${bytes} B`;
  }
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

/** A `last_change` (ISO 8601, or seconds/milliseconds since the epoch) as a Date, or null. */
export function parseChange(value: string | number | null | undefined): Date | null {
  if (value === null || value === undefined || value === '') {
    return null;
  }
  const date =
    typeof value === 'number' ? new Date(value < 1e12 ? value * 1000 : value) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "2 minutes ago" (JupyterLab's own wording, as in the file browser). */
export function formatAgo(date: Date): string {
  return Time.formatHuman(date);
}

/** The full local date and time, for tooltips. */
export function formatFull(date: Date): string {
  return Time.format(date);
}
