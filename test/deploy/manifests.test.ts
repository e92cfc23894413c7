// The deployment files (the Dockerfile, .dockerignore and the Kubernetes
// manifests in deploy/kubernetes) hold the invariants docs/deploy.md explains.
// No image is built and no cluster runs in CI, so they are checked as text.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { siloDefaults } from '../../src/hosting/options.ts';
import { envOf } from '../../src/cli/options.ts';
import { siloOptions } from '../../src/cli/tables.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const manifestDir = join(root, 'deploy/kubernetes');

/**
 * The environment variables `granary silo` reads, from the command's own
 * table of options: a name the manifests set that is not here would be an
 * option silently ignored in production.
 */
const siloEnv: ReadonlySet<string> = new Set(
  Object.entries(siloOptions).flatMap(([key, spec]) => envOf(key, spec) ?? []),
);

// ---- The parts of Kubernetes objects these checks read ----------------------

type Labels = Readonly<Record<string, string>>;

interface Manifest {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: unknown; labels?: Labels; annotations?: Labels };
  [key: string]: unknown;
}

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    fieldRef?: { fieldPath?: string };
    secretKeyRef?: { name?: string; key?: string; optional?: boolean };
    configMapKeyRef?: { name?: string; key?: string };
  };
}

interface Probe {
  httpGet?: { path?: string; port?: string | number };
  periodSeconds?: number;
  failureThreshold?: number;
  timeoutSeconds?: number;
}

interface Container {
  name: string;
  image?: string;
  ports?: { name?: string; containerPort: number }[];
  env?: EnvVar[];
  envFrom?: { configMapRef?: { name?: string }; secretRef?: { name?: string } }[];
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command?: string[] }; sleep?: { seconds?: number } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}

interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  containers: Container[];
  volumes?: { name: string; emptyDir?: object }[];
}

interface Deployment extends Manifest {
  spec: {
    selector: { matchLabels: Labels };
    strategy?: { type?: string; rollingUpdate?: { maxSurge?: number | string; maxUnavailable?: number | string } };
    template: { metadata: { labels: Labels; annotations?: Labels }; spec: PodSpec };
  };
}

// ---- Reading the files -------------------------------------------------------

/** Every document of every YAML file in deploy/kubernetes, by file. */
function readManifests(): Map<string, Manifest[]> {
  const out = new Map<string, Manifest[]>();
  for (const file of readdirSync(manifestDir).sort()) {
    if (!file.endsWith('.yaml') && !file.endsWith('.yml')) continue;
    const docs = parseAllDocuments(readFileSync(join(manifestDir, file), 'utf8'));
    const list = Array.isArray(docs) ? docs : [docs];
    const manifests: Manifest[] = [];
    for (const doc of list) {
      assert.deepEqual(
        [...doc.errors, ...doc.warnings].map((e) => e.message),
        [],
        `${file} does not parse as YAML`,
      );
      const value: unknown = doc.toJS();
      if (value === null) continue; // an empty document (a trailing ---)
      assert.ok(typeof value === 'object' && !Array.isArray(value), `${file}: a document is not a mapping`);
      manifests.push(value as Manifest);
    }
    out.set(file, manifests);
  }
  return out;
}

const files = readManifests();
/** The Kubernetes objects, the example Secret's included, with the file each is in. */
const objects = [...files]
  .filter(([file]) => file !== 'kustomization.yaml')
  .flatMap(([file, docs]) => docs.map((doc) => ({ file, doc })));

/** The one object of `kind` (named `name`, when given) among the applied manifests. */
function one<T extends Manifest>(kind: string, name?: string): T {
  const found = objects.filter(
    ({ file, doc }) =>
      doc.kind === kind && !file.includes('.example.') && (name === undefined || doc.metadata?.name === name),
  );
  assert.equal(
    found.length,
    1,
    `expected one ${kind}${name !== undefined ? ` named ${name}` : ''}, found ${found.length}`,
  );
  return (found[0] as { doc: Manifest }).doc as T;
}

/** True if every label `selector` asks for is on `labels`, and it asks for at least one. */
function selects(selector: Labels | undefined, labels: Labels): boolean {
  const wanted = Object.entries(selector ?? {});
  return wanted.length > 0 && wanted.every(([k, v]) => labels[k] === v);
}

const deployment = one<Deployment>('Deployment');
const pod = deployment.spec.template.spec;
const podLabels = deployment.spec.template.metadata.labels;
const silo = pod.containers.find((c) => c.name === 'silo') ?? assert.fail('the Deployment has no container named silo');
const configMapName = silo.envFrom?.find((e) => e.configMapRef !== undefined)?.configMapRef?.name;
const configData =
  configMapName !== undefined
    ? ((one<Manifest>('ConfigMap', configMapName).data ?? {}) as Record<string, string>)
    : ({} as Record<string, string>);
const env = new Map((silo.env ?? []).map((e) => [e.name, e]));

/** The value a GRANARY_* option has in the pod: a literal in `env`, else the ConfigMap's. */
function literal(name: string): string | undefined {
  const own = env.get(name);
  if (own !== undefined) return own.value;
  return configData[name];
}

function port(name: string): number {
  const p = silo.ports?.find((x) => x.name === name);
  assert.ok(p !== undefined, `the silo container has no port named ${name}`);
  return p.containerPort;
}

/** Seconds the preStop hook sleeps (an exec of `sleep N`, or the sleep action). */
function preStopSeconds(): number {
  const hook = silo.lifecycle?.preStop;
  assert.ok(hook !== undefined, 'the silo container has a preStop hook');
  if (hook.sleep?.seconds !== undefined) return hook.sleep.seconds;
  const cmd = hook.exec?.command ?? [];
  const i = cmd.findIndex((c) => c === 'sleep' || c.endsWith('/sleep'));
  assert.ok(i >= 0 && cmd[i + 1] !== undefined, `the preStop hook sleeps (got ${JSON.stringify(cmd)})`);
  const seconds = Number(cmd[i + 1]);
  assert.ok(Number.isFinite(seconds) && seconds > 0, `preStop sleeps a number of seconds, got ${cmd[i + 1]}`);
  return seconds;
}

describe('Kubernetes manifests', () => {
  it('parse, and every object has apiVersion, kind and metadata.name', () => {
    assert.ok(objects.length > 0, 'deploy/kubernetes holds manifests');
    for (const { file, doc } of objects) {
      assert.equal(typeof doc.apiVersion, 'string', `${file}: an object without apiVersion`);
      assert.equal(typeof doc.kind, 'string', `${file}: an object without kind`);
      assert.equal(typeof doc.metadata?.name, 'string', `${file}: a ${String(doc.kind)} without metadata.name`);
    }
  });

  it('are all listed in kustomization.yaml, except the example Secret', () => {
    const [kustomization] = files.get('kustomization.yaml') ?? [];
    assert.ok(kustomization !== undefined, 'deploy/kubernetes has a kustomization.yaml');
    assert.equal(kustomization.kind, 'Kustomization');
    const resources = (kustomization.resources ?? []) as string[];
    for (const r of resources)
      assert.ok(existsSync(join(manifestDir, r)), `kustomization.yaml lists ${r}, which is missing`);
    const expected = [...files.keys()].filter((f) => f !== 'kustomization.yaml' && !f.includes('.example.'));
    assert.deepEqual([...resources].sort(), expected.sort());
    assert.ok(
      [...files.keys()].some((f) => f.includes('.example.') && files.get(f)?.some((d) => d.kind === 'Secret')),
      'an example Secret is there for the connection string',
    );
  });

  it('roll the silos out one new before one old: maxSurge 1, maxUnavailable 0', () => {
    assert.equal(deployment.spec.strategy?.type, 'RollingUpdate');
    assert.equal(deployment.spec.strategy.rollingUpdate?.maxSurge, 1);
    assert.equal(deployment.spec.strategy.rollingUpdate?.maxUnavailable, 0);
    assert.ok(selects(deployment.spec.selector.matchLabels, podLabels), "the Deployment's selector matches its pods");
  });

  it('probe the health endpoints on the named http port, liveness generously', () => {
    const probes: [keyof Container, string][] = [
      ['startupProbe', '/health/startup'],
      ['readinessProbe', '/health/ready'],
      ['livenessProbe', '/health/live'],
    ];
    for (const [which, path] of probes) {
      const probe = silo[which] as Probe | undefined;
      assert.equal(probe?.httpGet?.path, path, `${which} asks ${path}`);
      assert.equal(probe.httpGet.port, 'http', `${which} uses the port named http`);
    }
    assert.equal(String(port('http')), literal('GRANARY_HTTP_PORT'), 'the http port is the one the silo serves');
    // A busy silo must not be restarted: a minute or so without an answer (Kubernetes' defaults: 10 s x 3).
    const live = silo.livenessProbe ?? {};
    const window = (live.periodSeconds ?? 10) * (live.failureThreshold ?? 3);
    assert.ok(window >= 30, `the liveness probe gives up after ${window} s; give a busy silo at least 30 s`);
    assert.ok((live.timeoutSeconds ?? 1) >= 2, 'the liveness probe waits at least 2 s for an answer');
  });

  it('give the silo its pod IP as address, and its connection strings from a Secret', () => {
    const host = env.get('GRANARY_HOST');
    assert.equal(host?.valueFrom?.fieldRef?.fieldPath, 'status.podIP', 'GRANARY_HOST is the pod IP (downward API)');
    assert.equal(configData['GRANARY_HOST'], undefined, 'GRANARY_HOST is not also set in the ConfigMap');
    for (const name of ['GRANARY_MEMBERSHIP', 'GRANARY_STORAGE', 'GRANARY_REMINDERS']) {
      const ref = env.get(name)?.valueFrom?.secretKeyRef;
      assert.ok(ref?.name !== undefined && ref.key !== undefined, `${name} comes from a Secret`);
      assert.equal(configData[name], undefined, `${name} is not in the ConfigMap`);
    }
    // The example Secret provides what the Deployment asks for.
    const membership = env.get('GRANARY_MEMBERSHIP')?.valueFrom?.secretKeyRef;
    const example = objects.find(
      ({ file, doc }) => file.includes('.example.') && doc.kind === 'Secret' && doc.metadata?.name === membership?.name,
    );
    assert.ok(example !== undefined, `an example Secret named ${membership?.name}`);
    const data = { ...(example.doc.stringData as object), ...(example.doc.data as object) };
    assert.ok(membership?.key !== undefined && membership.key in data, `the example Secret has key ${membership?.key}`);
    assert.match(String((data as Record<string, unknown>)[membership.key]), /^postgres(ql)?:\/\//);
  });

  it('set only environment variables the silo command knows', () => {
    const names = [...env.keys(), ...Object.keys(configData)].filter((n) => n.startsWith('GRANARY_'));
    for (const n of names) assert.ok(siloEnv.has(n), `${n} is not an option of granary silo`);
    const docs = readFileSync(join(root, 'docs/deploy.md'), 'utf8');
    for (const [n] of docs.matchAll(/\bGRANARY_[A-Z_]+\b/g))
      assert.ok(siloEnv.has(n), `docs/deploy.md names ${n}, not an option of granary silo`);
  });

  it('leave time for the whole graceful stop: grace > preStop + deactivation timeout', () => {
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    const configured = literal('GRANARY_DEACTIVATION_TIMEOUT_MS');
    const deactivationMs = configured !== undefined ? Number(configured) : siloDefaults.deactivationTimeoutMs;
    assert.ok(Number.isInteger(deactivationMs), `GRANARY_DEACTIVATION_TIMEOUT_MS is a number, got ${configured}`);
    const sleep = preStopSeconds();
    assert.ok(
      grace > sleep + deactivationMs / 1000,
      `terminationGracePeriodSeconds ${grace} <= preStop ${sleep} s + deactivation timeout ${deactivationMs / 1000} s`,
    );
  });

  it('run the silo unprivileged on a read-only root, writing only to emptyDir volumes', () => {
    const runAsNonRoot = silo.securityContext?.runAsNonRoot ?? pod.securityContext?.runAsNonRoot;
    assert.equal(runAsNonRoot, true, 'runAsNonRoot');
    const uid = silo.securityContext?.runAsUser ?? pod.securityContext?.runAsUser;
    assert.ok(uid !== 0, 'runAsUser is not root');
    assert.equal(silo.securityContext?.readOnlyRootFilesystem, true, 'readOnlyRootFilesystem');
    assert.equal(silo.securityContext?.allowPrivilegeEscalation, false, 'allowPrivilegeEscalation is off');
    assert.ok(silo.securityContext?.capabilities?.drop?.includes('ALL'), 'every capability is dropped');
    for (const m of silo.volumeMounts ?? []) {
      const v = pod.volumes?.find((x) => x.name === m.name);
      assert.ok(v !== undefined, `volume ${m.name} mounted at ${m.mountPath} is defined`);
      assert.ok(m.readOnly === true || v.emptyDir !== undefined, `${m.mountPath} is writable but not an emptyDir`);
    }
  });

  it('use a ServiceAccount with no token, and size the container', () => {
    assert.equal(pod.automountServiceAccountToken, false, 'no service account token in the pod');
    const sa = one<Manifest>('ServiceAccount', pod.serviceAccountName);
    assert.equal(sa.automountServiceAccountToken, false, 'the ServiceAccount mounts no token');
    assert.ok(silo.resources?.requests?.['cpu'] !== undefined, 'a CPU request');
    assert.ok(silo.resources?.requests?.['memory'] !== undefined, 'a memory request');
    assert.ok(silo.resources?.limits?.['memory'] !== undefined, 'a memory limit');
  });

  it('let Prometheus scrape /metrics on the http port', () => {
    const a = deployment.spec.template.metadata.annotations ?? {};
    assert.equal(a['prometheus.io/scrape'], 'true');
    assert.equal(a['prometheus.io/path'], '/metrics');
    assert.equal(a['prometheus.io/port'], String(port('http')));
  });

  it('use the ports the silo is configured with', () => {
    assert.equal(String(port('silo')), literal('GRANARY_PORT'));
    assert.equal(String(port('gateway')), literal('GRANARY_GATEWAY_PORT'));
  });

  it('budget one silo down at a time, for the silo pods', () => {
    const pdb = one<Manifest>('PodDisruptionBudget');
    const spec = pdb.spec as { maxUnavailable?: number; selector?: { matchLabels?: Labels } };
    assert.equal(spec.maxUnavailable, 1);
    assert.ok(selects(spec.selector?.matchLabels, podLabels), "the PodDisruptionBudget's selector matches the pods");
  });

  it('expose the gateway, and only the gateway, through a Service that selects the silos', () => {
    const services = objects.filter(({ doc }) => doc.kind === 'Service').map(({ doc }) => doc);
    assert.ok(services.length > 0, 'a Service for the gateway');
    const gatewayPort = port('gateway');
    let gateways = 0;
    for (const svc of services) {
      const spec = svc.spec as {
        selector?: Labels;
        ports?: { port: number; targetPort?: string | number }[];
      };
      assert.ok(selects(spec.selector, podLabels), `Service ${String(svc.metadata?.name)} selects the silo pods`);
      for (const p of spec.ports ?? []) {
        const target = p.targetPort ?? p.port;
        // Silos reach each other at the pod IPs in the membership table, never through a Service.
        assert.ok(target !== 'silo' && target !== port('silo'), 'no Service forwards to the silo-to-silo port');
        if (target === 'gateway' || target === gatewayPort) gateways++;
      }
    }
    assert.ok(gateways > 0, 'a Service forwards to the gateway port');
  });
});

// ---- Dockerfile --------------------------------------------------------------

interface Instruction {
  /** Upper case: FROM, RUN, COPY... */
  readonly op: string;
  readonly args: string;
  readonly line: number;
}

/** The Dockerfile's instructions, comments dropped and continued lines joined. */
function dockerfile(): Instruction[] {
  const out: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  readFileSync(join(root, 'Dockerfile'), 'utf8')
    .split('\n')
    .forEach((raw, i) => {
      const text = raw.trim();
      if (text.startsWith('#') || (text === '' && pending === undefined)) return;
      const joined =
        pending === undefined ? { text, line: i + 1 } : { text: `${pending.text} ${text}`, line: pending.line };
      if (joined.text.endsWith('\\')) {
        pending = { text: joined.text.slice(0, -1).trim(), line: joined.line };
        return;
      }
      pending = undefined;
      if (joined.text === '') return;
      const m = /^(\S+)\s*(.*)$/.exec(joined.text);
      if (m !== null) out.push({ op: (m[1] ?? '').toUpperCase(), args: m[2] ?? '', line: joined.line });
    });
  return out;
}

/** The arguments of an exec-form instruction (`["a", "b"]`). */
function execForm(ins: Instruction): string[] {
  const value: unknown = JSON.parse(ins.args);
  assert.ok(Array.isArray(value) && value.every((v) => typeof v === 'string'), `${ins.op} uses the exec (JSON) form`);
  return value as string[];
}

/** Whether `.dockerignore` keeps `path` out of the build context (plain patterns and `*`; no `!`). */
function ignored(patterns: readonly string[], path: string): boolean {
  return patterns.some((p) => {
    const re = new RegExp(
      `^${p
        .replace(/^\/+|\/+$/g, '')
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[^/]*')}(/.*)?$`,
    );
    return re.test(path.replace(/^\.\//, '').replace(/\/+$/, ''));
  });
}

describe('Dockerfile', () => {
  const ins = dockerfile();
  const froms = ins.filter((i) => i.op === 'FROM');
  const lastFrom = ins.lastIndexOf(froms[froms.length - 1] as Instruction);
  const final = ins.slice(lastFrom);
  const ignore = readFileSync(join(root, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

  it('builds in stages: at least two FROM, the last on a slim Node 20 image', () => {
    assert.ok(froms.length >= 2, `multi-stage: ${froms.length} FROM`);
    const arg = ins.find((i) => i.op === 'ARG' && i.args.startsWith('NODE_IMAGE='))?.args.slice('NODE_IMAGE='.length);
    const base = (final[0]?.args ?? '').replace('${NODE_IMAGE}', arg ?? '').split(/\s+/)[0] ?? '';
    assert.match(base, /^node:20[.\d]*-(bookworm-)?slim(@sha256:[0-9a-f]+)?$/, `the final stage is ${base}`);
  });

  it('runs as a user that is not root, in production mode, with only production dependencies', () => {
    const users = final.filter((i) => i.op === 'USER');
    assert.ok(users.length > 0, 'the final stage sets USER');
    const user = (users[users.length - 1] as Instruction).args.split(':')[0];
    assert.ok(user !== 'root' && user !== '0', `the final stage runs as ${user}`);
    assert.ok(
      final.some((i) => i.op === 'ENV' && /\bNODE_ENV=production\b/.test(i.args)),
      'NODE_ENV=production in the final stage',
    );
    for (const i of final.filter((x) => x.op === 'RUN')) {
      assert.doesNotMatch(i.args, /\bnpm\s+(install|i|add)\b/, `line ${i.line}: npm install in the final stage`);
      assert.doesNotMatch(i.args, /\bapt-get\s+install\b/, `line ${i.line}: packages installed in the final stage`);
    }
    // Production dependencies: a stage installs them with npm ci --omit=dev, or prunes to them.
    assert.ok(
      ins.some((i) => i.op === 'RUN' && /\bnpm\s+(ci\b[^&]*--omit=dev|prune\b[^&]*--omit=dev)/.test(i.args)),
      'production dependencies come from npm ci --omit=dev (or npm prune --omit=dev)',
    );
  });

  it('starts the granary command: ENTRYPOINT node dist/cli/main.js, CMD silo', () => {
    const entry = final.filter((i) => i.op === 'ENTRYPOINT');
    assert.equal(entry.length, 1, 'one ENTRYPOINT in the final stage');
    assert.deepEqual(execForm(entry[0] as Instruction), ['node', 'dist/cli/main.js']);
    const cmd = final.find((i) => i.op === 'CMD');
    assert.ok(cmd !== undefined, 'a CMD');
    assert.deepEqual(execForm(cmd), ['silo']);
    // dist/cli/main.js is what the build emits for src/cli/main.ts, and the package's bin.
    assert.ok(existsSync(join(root, 'src/cli/main.ts')));
    const build = JSON.parse(readFileSync(join(root, 'tsconfig.build.json'), 'utf8')) as {
      compilerOptions: { outDir: string; rootDir: string };
    };
    assert.deepEqual([build.compilerOptions.rootDir, build.compilerOptions.outDir], ['src', 'dist']);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    assert.equal(pkg.bin['granary'], './dist/cli/main.js');
  });

  it('exposes the ports the Kubernetes pods use', () => {
    const exposed = final
      .filter((i) => i.op === 'EXPOSE')
      .flatMap((i) => i.args.split(/\s+/))
      .map((p) => Number(p.split('/')[0]));
    for (const name of ['silo', 'gateway', 'http'])
      assert.ok(exposed.includes(port(name)), `EXPOSE ${port(name)} (${name})`);
  });

  it('copies only files that exist and that .dockerignore lets through', () => {
    const copies = ins.filter((i) => (i.op === 'COPY' || i.op === 'ADD') && !/(^|\s)--from=/.test(i.args));
    assert.ok(copies.length > 0);
    for (const c of copies) {
      const words = c.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      for (const src of words.slice(0, -1)) {
        assert.ok(existsSync(join(root, src)), `line ${c.line}: COPY ${src}, which is not in the repository`);
        assert.ok(!ignored(ignore, src), `line ${c.line}: COPY ${src}, which .dockerignore leaves out`);
      }
    }
  });

  it('.dockerignore keeps node_modules and .git out of the build context', () => {
    assert.ok(!ignore.some((l) => l.startsWith('!')), 'no exceptions (the check above reads plain patterns only)');
    for (const p of ['node_modules', '.git', 'dist']) assert.ok(ignored(ignore, p), `.dockerignore excludes ${p}`);
  });
});
