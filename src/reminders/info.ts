// What a grain sees of its reminders. Kept apart from the service (and free
// of imports) so that grain/ can name these types without depending on it.

/** A reminder as `getReminders()` lists it. */
export interface ReminderInfo {
  readonly name: string;
  readonly firstTickAt: number;
  readonly periodMs: number;
}

/** Options of `registerReminder`. */
export interface ReminderOptions {
  /** Ms from now to the first tick. */
  dueMs: number;
  /** Ms between ticks; at least the silo's `minReminderPeriodMs`. */
  periodMs: number;
}
