// Runs the hello service on the embedded defaults (one silo, SQLite state).
// `npm run start:hello`, then: curl -X POST localhost:8080/counter/alice/increment

import { startHello } from './app.ts';

const app = await startHello({ port: Number(process.env['PORT'] ?? 8080) });
console.log(`hello service on ${app.url}  (try: curl -X POST ${app.url}/counter/alice/increment)`);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    console.log(`${sig}: stopping`);
    void app.stop().then(() => process.exit(0));
  });
}
