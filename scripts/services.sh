#!/usr/bin/env bash
# Makes sure the services the tests use are up on 127.0.0.1: PostgreSQL (5432),
# Redis (6379), NATS with JetStream (4222) and Mosquitto (MQTT, 1883, for the
# fleet sample's tests). Starts any that is down, then
# waits for it. Safe to run when they are already up.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 1 60); do
    up "$port" && { echo "services: $name is up on $port"; return 0; }
    sleep 0.5
  done
  echo "services: $name did not come up on $port" >&2
  return 1
}

if ! up 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
if ! up 6379; then
  echo "services: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no || true
fi
if ! up 4222; then
  echo "services: starting NATS with JetStream"
  mkdir -p /var/lib/nats-server 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server || true
fi

if ! up 1883; then
  echo "services: starting Mosquitto"
  mosquitto -d -p 1883 || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mosquitto -- -p 1883 || true
fi

ok=0
wait_port PostgreSQL 5432 || ok=1
wait_port Redis 6379 || ok=1
wait_port NATS 4222 || ok=1
wait_port Mosquitto 1883 || ok=1
# PostgreSQL accepts connections a little after it listens.
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 0.5
done
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
exit $ok
