// Pattern: chatty fine-grained calls, and one coarse call.
//
// Bad: a floor view asks each sensor for its name, temperature, humidity and
// battery in four calls. Each call is a message, a turn in the sensor's
// mailbox and, when the sensor lives on another silo, a network round trip.
//
// Good: the sensor answers one call with a snapshot of everything the view
// needs. Same result, a quarter of the messages and a quarter of the hops.

import { Grain, grain, placement, readOnly, type CustomPlacement } from 'granary';

export interface SensorSnapshot {
  name: string;
  temperature: number;
  humidity: number;
  battery: number;
}

/** Places a grain on a silo other than the caller's when there is one: every call to it is a hop. */
export const elsewhere: CustomPlacement = {
  name: 'elsewhere',
  place: (_grain, silos, local) => silos.find((s) => s !== local) ?? local,
};

// #region sensor
@grain('sensor')
@placement(elsewhere)
export class Sensor extends Grain {
  #reading: SensorSnapshot = { name: '', temperature: 0, humidity: 0, battery: 100 };

  async set(reading: SensorSnapshot): Promise<void> {
    this.#reading = reading;
  }

  // Fine-grained: one call per field.
  @readOnly async name(): Promise<string> {
    return this.#reading.name;
  }
  @readOnly async temperature(): Promise<number> {
    return this.#reading.temperature;
  }
  @readOnly async humidity(): Promise<number> {
    return this.#reading.humidity;
  }
  @readOnly async battery(): Promise<number> {
    return this.#reading.battery;
  }

  // Coarse: what a caller needs, in one call.
  @readOnly async snapshot(): Promise<SensorSnapshot> {
    return this.#reading;
  }

  /** The silo it lives on (for the test). */
  @readOnly async where(): Promise<string> {
    return this.silo.address;
  }
}
// #endregion sensor

// #region floor
@grain('floor')
@placement('preferLocal')
export class Floor extends Grain {
  /** Bad: four calls per sensor. */
  async viewChatty(sensorKeys: string[]): Promise<SensorSnapshot[]> {
    return Promise.all(
      sensorKeys.map(async (key) => {
        const s = this.getGrain(Sensor, key);
        return {
          name: await s.name(),
          temperature: await s.temperature(),
          humidity: await s.humidity(),
          battery: await s.battery(),
        };
      }),
    );
  }

  /** Good: one call per sensor. */
  async viewCoarse(sensorKeys: string[]): Promise<SensorSnapshot[]> {
    return Promise.all(sensorKeys.map((key) => this.getGrain(Sensor, key).snapshot()));
  }
}
// #endregion floor

export const chattyGrains = [Sensor, Floor];
