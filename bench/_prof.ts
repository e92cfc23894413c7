import { Silo, Grain, grain, silentLogger } from 'granary';
@grain('benchCounter')
class BenchCounter extends Grain {
  total = 0;
  async add(n: number): Promise<number> { this.total += n; return this.total; }
}
const silo = await Silo.start({ grains: [BenchCounter], logger: silentLogger() });
const refs = Array.from({ length: 1000 }, (_, i) => silo.getGrain(BenchCounter, `k${i}`));
const end = Date.now() + 3000;
let calls = 0;
await Promise.all(refs.map(async (r) => { while (Date.now() < end) { for (let i = 0; i < 100; i++) await r.add(1); calls += 100; } }));
console.log(calls / 3);
await silo.stop();
