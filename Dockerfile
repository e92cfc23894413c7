# The silo image: `granary silo` with the framework and its production
# dependencies, and no grains of its own. Build an image of your application
# on top of it (FROM this image, COPY your compiled grain module, set
# GRANARY_GRAINS): see docs/deploy.md.
#
# Three stages on the same base image, so that the native module
# (better-sqlite3) built in one runs in the last, and the compilers never
# reach it. Pin the base by digest for reproducible builds.
ARG NODE_IMAGE=node:20-bookworm-slim

# 1. Compile the TypeScript. Install scripts stay off: the package's own
#    `prepare` would build before the sources are here, and tsc needs no
#    native module.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# 2. Production dependencies only. `npm ci` would run `prepare` (a build,
#    with dev dependencies that are not here), so scripts are off for it and
#    `npm rebuild` runs the dependencies' install scripts afterwards. The
#    compilers are for better-sqlite3 when no prebuilt binary fits.
FROM ${NODE_IMAGE} AS deps
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm rebuild \
  && npm cache clean --force

# 3. The runtime: compiled code and production dependencies, owned by root
#    and read-only to the silo, which runs as the unprivileged `node` user
#    (uid 1000).
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# node_modules/granary -> /app: a grain module anywhere under /app, even one
# with a package.json and node_modules of its own, imports 'granary' from this
# copy. There must be only one: the silo finds grain classes by
# `instanceof Grain`.
# .granary: where `granary silo` keeps SQLite storage and reminders when it is
# given no others (one container, e.g. `docker run`); a cluster uses PostgreSQL.
RUN ln -s .. node_modules/granary \
  && mkdir .granary \
  && chown node:node .granary
USER node
# Silo-to-silo, gateway (external clients), HTTP (health, metrics, dashboard).
EXPOSE 11111 30000 8080
# No HEALTHCHECK: Kubernetes ignores it and runs its own probes on the silo's
# health endpoints (deploy/kubernetes/deployment.yaml).
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["silo"]
