#!/bin/sh
# restart-service: restart one system service, by name.
#
#   MC_PARAM_SERVICE=nginx ./run.sh            restart it
#   MC_PARAM_SERVICE=nginx ./run.sh --dry-run  print the plan only
#
# Module config: MC_VAR_ALLOWED_SERVICES, names separated by spaces or
# commas; when set, only those services may be restarted.
#
# The runner validated the name against module.yaml already; it is checked
# again here (defence in depth: this script may be run by hand) before it
# goes anywhere near a command line.  One line of output per step.
set -eu

dry_run=0
if [ "${1:-}" = "--dry-run" ]; then
    dry_run=1
    shift
fi
if [ "$#" -ne 0 ]; then
    echo "usage: MC_PARAM_SERVICE=NAME $0 [--dry-run]" >&2
    exit 2
fi

service="${MC_PARAM_SERVICE:-}"
case "$service" in
    "")
        echo "error: MC_PARAM_SERVICE is not set" >&2
        exit 2
        ;;
    *[!a-z0-9-]*)
        # The value itself is not echoed: it is not known to be printable.
        echo "error: the service name must match ^[a-z0-9-]+\$" >&2
        exit 2
        ;;
    -*)
        # Allowed by the pattern, but service(8) has no "--" and would read
        # it as an option (--help, --status-all); no real service starts so.
        echo "error: the service name must not start with '-' (it would be read as an option)" >&2
        exit 2
        ;;
esac
if [ "${#service}" -gt 64 ]; then
    echo "error: service name is longer than 64 characters" >&2
    exit 2
fi

allowed="$(printf '%s' "${MC_VAR_ALLOWED_SERVICES:-}" | tr ',' ' ')"
if [ -n "$(printf '%s' "$allowed" | tr -d ' \t\n')" ]; then
    case " $(printf '%s' "$allowed" | tr '\t\n' '  ') " in
        *" $service "*) ;;
        *)
            echo "error: $service is not in allowed_services (module config)" >&2
            exit 2
            ;;
    esac
fi

# systemd is running when /run/systemd/system exists (sd_booted(3)).
if [ -d /run/systemd/system ]; then
    manager=systemd
    set -- systemctl restart -- "$service"
else
    manager=service
    set -- service "$service" restart
fi

echo "service: $service (via $manager)"
if [ "$dry_run" -eq 1 ]; then
    echo "would run: $*"
    exit 0
fi

echo "running: $*"
if ! "$@"; then
    echo "error: restarting $service failed" >&2
    exit 1
fi
if [ "$manager" = systemd ]; then
    state="$(systemctl is-active -- "$service" || true)"
    if [ "$state" != active ]; then
        echo "error: $service is ${state:-unknown} after the restart" >&2
        exit 1
    fi
    echo "$service is active"
else
    echo "restarted $service"
fi
