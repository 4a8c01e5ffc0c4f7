#!/usr/bin/env bash
# Starts a single-node Kafka broker + KRaft controller on 127.0.0.1 in the foreground (exec java, so a
# SIGTERM to this process stops the broker cleanly). Used by tests/fixtures/kafka_broker.py and by hand:
#
#   scripts/kafka/run-broker.sh PORT DIR [CONTROLLER_PORT]
#   KAFKA_SASL_PORT=P KAFKA_SCRAM_USER=NAME KAFKA_SCRAM_PASSWORD=SECRET scripts/kafka/run-broker.sh PORT DIR
#
# With KAFKA_SASL_PORT set, a second listener SASL_PLAINTEXT://127.0.0.1:P accepts SCRAM-SHA-256 and
# SCRAM-SHA-512 logins; the user is written into the KRaft metadata when the storage is formatted (first
# start only), so a production-like authenticated client can be tested against the real broker.
#
# DIR holds server.properties, the log4j2 config, broker.log and the data (DIR/data). The storage is
# formatted with a random cluster id on first use; a second start on the same DIR reuses the data, so a
# stop + start again is an outage, not a wipe. Topics are NOT auto-created (auto.create.topics.enable=false):
# a typo in a topic name fails loudly instead of silently creating a topic; the stream layer and the test
# fixtures create topics (and their .dlq) explicitly. Jars come from scripts/kafka/fetch.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${1:?usage: run-broker.sh PORT DIR [CONTROLLER_PORT]}"
dir="${2:?usage: run-broker.sh PORT DIR [CONTROLLER_PORT]}"
cport="${3:-}"
version="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")}"
libs="${MAMDR_KAFKA_HOME:-$HOME/.cache/mamdr/kafka/$version}/libs"
if ! compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  echo "run-broker.sh: no Kafka jars in $libs: run scripts/kafka/fetch.sh first" >&2
  exit 3
fi
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"
if [ -z "$cport" ]; then
  if [ -f "$dir/controller.port" ]; then cport="$(cat "$dir/controller.port")"
  else cport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"; fi
fi
echo "$cport" > "$dir/controller.port"
sasl_port="${KAFKA_SASL_PORT:-}"
listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
advertised="PLAINTEXT://127.0.0.1:$port"
protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
sasl_props=""
if [ -n "$sasl_port" ]; then
  listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$sasl_port"
  advertised="$advertised,SASL_PLAINTEXT://127.0.0.1:$sasl_port"
  protocols="$protocols,SASL_PLAINTEXT:SASL_PLAINTEXT"
  sasl_props="sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
fi

cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
$sasl_props
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=8388608
message.max.bytes=1048588
PROPS

cat > "$dir/log4j2.properties" <<LOG
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/broker.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = \${env:KAFKA_LOG_LEVEL:-WARN}
rootLogger.appenderRef.file.ref = file
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
LOG

jvm=(-Xms128m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseSerialGC -Djava.awt.headless=true
     -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir")
if [ ! -f "$dir/data/meta.properties" ]; then
  cluster_id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  scram=()
  if [ -n "$sasl_port" ]; then
    user="${KAFKA_SCRAM_USER:?KAFKA_SASL_PORT needs KAFKA_SCRAM_USER and KAFKA_SCRAM_PASSWORD}"
    pass="${KAFKA_SCRAM_PASSWORD:?KAFKA_SASL_PORT needs KAFKA_SCRAM_USER and KAFKA_SCRAM_PASSWORD}"
    scram=(--add-scram "SCRAM-SHA-256=[name=$user,password=$pass]" --add-scram "SCRAM-SHA-512=[name=$user,password=$pass]")
  fi
  "$java" "${jvm[@]}" -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
    -c "$dir/server.properties" --ignore-formatted "${scram[@]}" >"$dir/format.log" 2>&1 \
    || { echo "run-broker.sh: formatting $dir/data failed:" >&2; cat "$dir/format.log" >&2; exit 4; }
fi
exec "$java" "${jvm[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties"
