# usage_report: sign a JSON body and POST it to stripe-usage-reporter, with curl and openssl (bash).
#
#   source clients/shell/usage_reporter.sh
#   export USAGE_REPORTER_URL=https://abc123.execute-api.us-east-1.amazonaws.com
#   export USAGE_REPORTER_CLIENT=billing-svc USAGE_REPORTER_SECRET='<secret>'
#   usage_report /v1/usage '{"idempotency_key": "inv-42-api-calls", "subscription_item": "si_123", "quantity": 3}'
#
# Prints the answer's body and sets USAGE_REPORT_STATUS to its HTTP status. Returns 0 for a 2xx (reported,
# accepted, queued), 1 for any other answer (a 422 rejected too: read the body), 2 when it cannot run
# (arguments, settings, tools), and curl's exit code when no answer came at the last attempt.
#
# Retries as the README says, with the same body (signed afresh): 409 idempotency_in_progress, 503, and network
# errors (refused, reset, timed out), waiting Retry-After (at most USAGE_REPORTER_MAX_BACKOFF seconds, default
# 30), else 1 s doubling; at most USAGE_REPORTER_MAX_ATTEMPTS attempts (default 5), USAGE_REPORTER_TIMEOUT
# seconds each (default 30). Nothing else is retried.
#
# The secret is an argument of openssl while it runs: other users of the machine can see it with `ps`.

usage_report() {
    if [[ $# -ne 2 || $1 != /* ]]; then
        echo "usage: usage_report <path> <json body>   (e.g. usage_report /v1/usage '{...}')" >&2
        return 2
    fi
    local path=$1 body=$2 name
    for name in USAGE_REPORTER_URL USAGE_REPORTER_CLIENT USAGE_REPORTER_SECRET; do
        if [[ -z ${!name:-} ]]; then
            echo "usage_report: $name is not set" >&2
            return 2
        fi
    done
    if ! command -v curl >/dev/null || ! command -v openssl >/dev/null; then
        echo "usage_report: needs curl and openssl" >&2
        return 2
    fi
    local max_attempts=${USAGE_REPORTER_MAX_ATTEMPTS:-5} max_backoff=${USAGE_REPORTER_MAX_BACKOFF:-30}
    local url="${USAGE_REPORTER_URL%/}$path" attempt=1 backoff=1 t signature status code retry_after wait
    local headers response
    headers=$(mktemp) || return 2
    response=$(mktemp) || { rm -f "$headers"; return 2; }
    while :; do
        t=$(date +%s)
        signature=$(printf '%s.%s' "$t" "$body" | openssl dgst -sha256 -hmac "$USAGE_REPORTER_SECRET" | sed 's/^.*= //')
        code=0
        status=$(curl -sS -o "$response" -D "$headers" -w '%{http_code}' --max-time "${USAGE_REPORTER_TIMEOUT:-30}" \
            -X POST "$url" -H 'Content-Type: application/json' -H 'Expect:' \
            -H "X-Usage-Client: $USAGE_REPORTER_CLIENT" -H "X-Usage-Signature: t=$t,v1=$signature" \
            --data-binary "$body") || code=$?
        retry_after=
        if ((code != 0)); then
            status=000
            case $code in
                6 | 7 | 28 | 52 | 55 | 56) ;; # DNS, refused, timed out, empty answer, send/receive failed: retried
                *) break ;;
            esac
        elif [[ $status == 503 ]] || { [[ $status == 409 ]] && grep -q '"idempotency_in_progress"' "$response"; }; then
            retry_after=$(tr -d '\r' <"$headers" | awk -F': *' 'tolower($1) == "retry-after" {value = $2} END {print value}')
        else
            break
        fi
        ((attempt >= max_attempts)) && break
        if [[ $retry_after =~ ^[0-9]+$ ]]; then
            wait=$retry_after
        else
            wait=$backoff
            backoff=$((backoff * 2))
        fi
        ((wait > max_backoff)) && wait=$max_backoff
        sleep "$wait"
        attempt=$((attempt + 1))
    done
    USAGE_REPORT_STATUS=$status
    if ((code != 0)); then
        echo "usage_report: no answer from $url after $attempt attempt(s) (curl exit $code)" >&2
        rm -f "$headers" "$response"
        return "$code"
    fi
    cat "$response"
    echo
    rm -f "$headers" "$response"
    [[ $status == 2?? ]] || return 1
}
