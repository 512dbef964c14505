# Shared by ci/mobile and ci/robolectric (sourced, not run): the versions the Android
# library declares, the tools both install, and the name server both run. The sourcing
# script defines `say`, sets `root`, `target` and `cache`, and runs under `set -euo pipefail`.

# A version from android/gradle/libs.versions.toml's [versions].
catalog_version() {
    python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["versions"][sys.argv[2]])' \
        "$root/android/gradle/libs.versions.toml" "$1"
}

# Debian packages both need: a C toolchain, npm, a JDK (17+), Maven, python3, readelf.
install_system_packages() {
    local need=()
    command -v cc >/dev/null || need+=(build-essential)
    command -v npm >/dev/null || need+=(npm)
    { command -v java >/dev/null && command -v javac >/dev/null; } || need+=(default-jdk-headless)
    command -v mvn >/dev/null || need+=(maven)
    command -v python3 >/dev/null || need+=(python3)
    command -v readelf >/dev/null || need+=(binutils)
    if ((${#need[@]})); then
        if [ "$(id -u)" != 0 ]; then
            say "please install: ${need[*]} (or run as root)" >&2
            exit 1
        fi
        say "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    local java_major
    java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [ "${java_major:-0}" -lt 17 ]; then
        say "the Kotlin tests need Java 17 or later (java is $java_major)" >&2
        exit 1
    fi
}

# The catalog's versions: KOTLIN_VERSION, JNA_VERSION, COROUTINES_VERSION.
read_catalog() {
    KOTLIN_VERSION=$(catalog_version kotlin)
    JNA_VERSION=$(catalog_version jna)
    COROUTINES_VERSION=$(catalog_version kotlinx-coroutines)
}

# kotlinc $KOTLIN_VERSION from npm into the cache (idempotent, atomic); sets kotlin_home
# and klib (its lib directory, with the standard library and kotlin-test).
install_kotlin() {
    kotlin_home=$cache/kotlin-$KOTLIN_VERSION/node_modules/kotlin-compiler
    if [ ! -f "$cache/kotlin-$KOTLIN_VERSION/.complete" ]; then
        say "installing kotlin-compiler $KOTLIN_VERSION from npm into $cache"
        mkdir -p "$cache"
        local tmp
        tmp=$(mktemp -d "$cache/.install.XXXXXX")
        npm install --prefix "$tmp" --no-audit --no-fund --no-save --loglevel=error \
            "kotlin-compiler@$KOTLIN_VERSION" >/dev/null
        chmod +x "$tmp/node_modules/kotlin-compiler/bin/"*
        "$tmp/node_modules/kotlin-compiler/bin/kotlinc" -version >/dev/null 2>&1 || {
            say "the installed kotlinc does not run" >&2
            exit 1
        }
        touch "$tmp/.complete"
        rm -rf "$cache/kotlin-$KOTLIN_VERSION"
        mv "$tmp" "$cache/kotlin-$KOTLIN_VERSION"
    fi
    klib=$kotlin_home/lib
    local jar
    for jar in kotlin-stdlib.jar kotlin-test.jar; do
        [ -f "$klib/$jar" ] || { say "missing $klib/$jar in kotlin-compiler $KOTLIN_VERSION" >&2; exit 1; }
    done
}

# The classpath of COORDINATES (ci/maven-fetch into the cache) and of JNA and coroutines
# as the AAR declares them, without the Kotlin standard library (the compiler's is used).
maven_classpath() {
    ci/maven-fetch "$cache/maven" "$@" "net.java.dev.jna:jna:$JNA_VERSION" \
        "org.jetbrains.kotlinx:kotlinx-coroutines-core-jvm:$COROUTINES_VERSION" |
        tr ':' '\n' | grep -v '/org/jetbrains/kotlin/kotlin-stdlib' | paste -sd:
}

# Starts `msocketd name` (MSOCKETD) on a free loopback port in a temporary directory
# (`work`); sets `names` to its address. Stopped, and `work` removed, on exit.
start_name_server() {
    local msocketd=$1 line
    work=$(mktemp -d)
    daemon=
    trap stop_name_server EXIT
    mkfifo "$work/announce"
    "$msocketd" name --listen 127.0.0.1:0 --db "$work/names.redb" >"$work/announce" 2>"$work/msocketd.log" &
    daemon=$!
    exec 3<"$work/announce"
    if ! read -r -t 20 line <&3; then
        say "msocketd did not announce its address; its log:" >&2
        cat "$work/msocketd.log" >&2
        exit 1
    fi
    # fd 3 stays open while it runs: msocketd dies of SIGPIPE if nobody holds the pipe.
    names=${line#msocketd: name service listening on }
    say "name service at $names"
}

stop_name_server() {
    exec 3<&- 2>/dev/null || true
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "${work:-}"
}

# The end of the name server's log, after a failure.
name_server_log_tail() {
    tail -n 20 "$work/msocketd.log" >&2 || true
}
