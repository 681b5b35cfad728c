# Shell functions the scripts that run a JVM server from Maven Central jars share (sourced, not run):
# deploy/kafka/kafka.sh, scripts/cassandra.sh, scripts/s3.sh. Each defines log() and die() first.

# fetch_jars NAME POM CACHE: the runtime jars of POM's dependencies copied into CACHE/lib once (a complete
# copy is marked by CACHE/lib/.complete; a partial one is redone).
fetch_jars() {
  local name=$1 pom=$2 cache=$3
  if [ -f "$cache/lib/.complete" ]; then return 0; fi
  command -v java >/dev/null || die "java is not installed (Java 17 needed)"
  command -v mvn >/dev/null || die "mvn is not installed (Maven needed to fetch the jars)"
  log "fetching $name jars into $cache/lib"
  mkdir -p "$cache"
  rm -rf "$cache/lib.tmp"
  mvn -B -q -f "$pom" org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$cache/lib.tmp" >&2
  rm -rf "$cache/lib" && mv "$cache/lib.tmp" "$cache/lib" && touch "$cache/lib/.complete"
}

# jvm_pid PIDFILE MARKER: the pid in PIDFILE when it is a live process with the argument MARKER on its
# command line (ours, not a pid reused since); nothing (and status 1) otherwise.
jvm_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$2" || return 1
  echo "$pid"
}
