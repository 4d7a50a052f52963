# shellcheck shell=bash
# API tokens for the scripts that call the API (test-image, test-robustness, `just run`).
#
#   mint_api_token BINARY PRINCIPAL DIR [SCOPE...]
#
# Mints a token with `BINARY mint-token PRINCIPAL --scope SCOPE...` (default scopes
# tasks:read tasks:write) and writes DIR/token (the plain token, for clients and
# `round-trip --token-file`) and DIR/line (its line for the `auth.api_tokens` file, a
# hash only), both readable by the owner only. Returns non-zero, saying why, when the
# binary cannot mint or prints no token and line.
mint_api_token() {
    local bin="$1" principal="$2" dir="$3"
    shift 3
    local scopes=("$@")
    [[ ${#scopes[@]} -gt 0 ]] || scopes=(tasks:read tasks:write)
    local out token line
    if ! out="$("${bin}" mint-token "${principal}" --scope "${scopes[@]}" 2>&1)"; then
        printf 'mint_api_token: %s mint-token failed: %s\n' "${bin}" "${out}" >&2
        return 1
    fi
    token="$(grep -oE 'tkn_[A-Za-z0-9_-]+' <<<"${out}" | head -n 1)"
    line="$(grep -E '^[^ #]+ sha256:[0-9a-fA-F]{64} [^ ]+$' <<<"${out}" | head -n 1)"
    if [[ -z "${token}" || -z "${line}" ]]; then
        printf 'mint_api_token: %s mint-token printed no token and line\n' "${bin}" >&2
        return 1
    fi
    mkdir -p "${dir}"
    (umask 077 && printf '%s\n' "${token}" >"${dir}/token" && printf '%s\n' "${line}" >"${dir}/line")
}
