#!/usr/bin/env bash
# Assembles the Apache Kafka broker (KRaft) from Maven Central jars into a cache outside the clone:
#   ${MAMDR_KAFKA_HOME:-~/.cache/mamdr/kafka/<version>}/libs/*.jar
# Idempotent: does nothing when the jars are already there (a stamp file marks a complete copy).
# Prints the libs folder on stdout. Needs mvn and a JDK 17+ (apt-get install maven openjdk-17-jre-headless).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")}"
home="${MAMDR_KAFKA_HOME:-$HOME/.cache/mamdr/kafka/$version}"
libs="$home/libs"
stamp="$home/.complete-$(sha256sum "$here/pom.xml" | cut -c1-16)"

if [ -f "$stamp" ] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  echo "$libs"
  exit 0
fi
if ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  echo "[kafka] installing maven and a JDK 17 (Debian packages)" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq maven openjdk-17-jre-headless >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq maven openjdk-17-jre-headless >/dev/null; fi
fi
mkdir -p "$home"
exec 9>"$home/.fetch.lock"
flock 9  # one fetch at a time; a second caller finds the stamp afterwards
if [ -f "$stamp" ] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
  echo "$libs"
  exit 0
fi
echo "[kafka] fetching Kafka $version jars into $libs (first run only)" >&2
tmp="$home/.libs.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Dkafka.version="$version" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp" >&2
# Swap in atomically so a concurrent or interrupted run never leaves a half-filled libs folder.
rm -rf "$libs"
mv -T "$tmp" "$libs"
rm -f "$home"/.complete-*
touch "$stamp"
echo "$libs"
