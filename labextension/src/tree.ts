/**
 * Paths into an Automerge document and the edits the document view makes
 * with them. Pure functions of a document (or of the draft inside
 * `handle.change`), no DOM.
 */
import * as A from '@automerge/automerge/slim';

/** A path from the document root: map keys and list indices. */
export type Path = (string | number)[];

/** What kind of value sits at a path, as far as the view cares. */
export type ValueKind =
  | 'map'
  | 'list'
  | 'text'
  | 'string'
  | 'number'
  | 'boolean'
  | 'null'
  | 'counter'
  | 'date'
  | 'bytes'
  | 'unknown';

/** The kind of a value read from an Automerge document. */
export function kindOf(value: unknown): ValueKind {
  if (value === null || value === undefined) {
    return 'null';
  }
  if (typeof value === 'string') {
    return 'text';
  }
  if (typeof value === 'number') {
    return 'number';
  }
  if (typeof value === 'boolean') {
    return 'boolean';
  }
  if (value instanceof A.Counter) {
    return 'counter';
  }
  if (value instanceof A.ImmutableString) {
    return 'string';
  }
  if (value instanceof Date) {
    return 'date';
  }
  if (value instanceof Uint8Array) {
    return 'bytes';
  }
  if (Array.isArray(value)) {
    return 'list';
  }
  if (typeof value === 'object') {
    return 'map';
  }
  return 'unknown';
}

/** Kinds edited in place by clicking the value. */
export function isEditable(kind: ValueKind): boolean {
  return (
    kind === 'text' ||
    kind === 'string' ||
    kind === 'number' ||
    kind === 'boolean' ||
    kind === 'null'
  );
}

/** The value at `path`, or undefined when the path leads nowhere. */
export function valueAt(root: unknown, path: Path): unknown {
  let node: unknown = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') {
      return undefined;
    }
    node = (node as Record<string | number, unknown>)[key];
  }
  return node;
}

/** The text an edit input starts with for a value. */
export function displayText(value: unknown): string {
  const kind = kindOf(value);
  switch (kind) {
    case 'text':
      return value as string;
    case 'string':
      return (value as A.ImmutableString).toString();
    case 'counter':
      return String((value as A.Counter).value);
    case 'date':
      return (value as Date).toISOString();
    case 'bytes':
      return `<${(value as Uint8Array).length} bytes>`;
    case 'null':
      return 'null';
    default:
      return String(value);
  }
}

/** An edit the user asked for could not be applied; the message says why. */
export class EditError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EditError';
  }
}

/**
 * The new value an edit input stands for, given the kind of the value it
 * replaces: numbers must parse, booleans are `true`/`false`, `null` takes any
 * JSON (or a plain string).
 */
export function parseEdit(kind: ValueKind, input: string): unknown {
  switch (kind) {
    case 'text':
    case 'string':
      return input;
    case 'number': {
      const number = Number(input.trim());
      if (input.trim() === '' || !Number.isFinite(number)) {
        throw new EditError(`not a number: ${input}`);
      }
      return number;
    }
    case 'boolean': {
      const word = input.trim().toLowerCase();
      if (word === 'true' || word === 'false') {
        return word === 'true';
      }
      throw new EditError(`not true or false: ${input}`);
    }
    default:
      return parseLiteral(input);
  }
}

/** A value typed for a new key or list item: JSON when it parses, else a string. */
export function parseLiteral(input: string): unknown {
  const text = input.trim();
  if (text === '') {
    return '';
  }
  try {
    return JSON.parse(text);
  } catch {
    return input;
  }
}

function parentOf(draft: unknown, path: Path): Record<string | number, unknown> {
  if (path.length === 0) {
    throw new EditError('the document root cannot be replaced');
  }
  const parent = valueAt(draft, path.slice(0, -1));
  if (parent === null || typeof parent !== 'object') {
    throw new EditError(`no map or list at ${JSON.stringify(path.slice(0, -1))}`);
  }
  return parent as Record<string | number, unknown>;
}

/**
 * Inside `handle.change`: set the value at `path`. Collaborative text is
 * updated with `updateText` (a minimal splice), so concurrent edits of the
 * same string merge instead of one replacing the other.
 */
export function setValue(draft: unknown, path: Path, value: unknown): void {
  const parent = parentOf(draft, path);
  const key = path[path.length - 1];
  const current = parent[key];
  if (typeof current === 'string' && typeof value === 'string') {
    A.updateText(draft as A.Doc<unknown>, path as A.Prop[], value);
    return;
  }
  if (current instanceof A.ImmutableString && typeof value === 'string') {
    parent[key] = new A.ImmutableString(value);
    return;
  }
  parent[key] = value;
}

/** Inside `handle.change`: add (or replace) `key` of the map at `path`. */
export function addKey(draft: unknown, path: Path, key: string, value: unknown): void {
  const map = valueAt(draft, path);
  if (kindOf(map) !== 'map') {
    throw new EditError(`no map at ${JSON.stringify(path)}`);
  }
  if (key === '') {
    throw new EditError('a key cannot be empty');
  }
  (map as Record<string, unknown>)[key] = value;
}

/** Inside `handle.change`: remove the map key or list item at `path`. */
export function deleteAt(draft: unknown, path: Path): void {
  const parent = parentOf(draft, path);
  const key = path[path.length - 1];
  if (Array.isArray(parent)) {
    parent.splice(Number(key), 1);
  } else {
    delete parent[key];
  }
}

/** Inside `handle.change`: append `value` to the list at `path`. */
export function pushTo(draft: unknown, path: Path, value: unknown): void {
  const list = valueAt(draft, path);
  if (!Array.isArray(list)) {
    throw new EditError(`no list at ${JSON.stringify(path)}`);
  }
  list.push(value);
}
