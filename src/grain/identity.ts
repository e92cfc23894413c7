// Grain identity: a grain is addressed by its type name and a string key.
// Printable as `type/key`; the printed form is the key of every runtime table.

/** A grain's identity. `String(id)` gives `type/key`. */
export interface GrainId {
  readonly type: string;
  readonly key: string;
  toString(): string;
}

class Id implements GrainId {
  readonly type: string;
  readonly key: string;
  constructor(type: string, key: string) {
    this.type = type;
    this.key = key;
  }
  toString(): string {
    return `${this.type}/${this.key}`;
  }
  toJSON(): { type: string; key: string } {
    return { type: this.type, key: this.key };
  }
}

/** Makes a grain id; `key` must be a string. */
export function grainId(type: string, key: string): GrainId {
  return new Id(type, key);
}

/**
 * The type name of client observers' references: `$observer/<key>` names an
 * object in a client, which its gateway delivers calls to. No grain class has it.
 */
export const OBSERVER_TYPE = '$observer';
