# Sourced first by every protocol script: `-h` or `--help` prints the calling script's header comment
# and exits 0; fewer positional arguments than the script needs print it and exit 2.
#   source "$(dirname "$0")/../common/help.sh" MIN_ARGS "$@"
_help_script=${BASH_SOURCE[1]}
_help_text() { sed -n '2,/^[^#]/p' "$_help_script" | grep '^#' | sed 's/^# \{0,1\}//'; }
_help_min=$1; shift
for _help_arg in "$@"; do
    case "$_help_arg" in -h|--help) _help_text; exit 0 ;; esac
done
if [ $# -lt "$_help_min" ]; then
    _help_text >&2
    echo "error: $(basename "$_help_script") needs at least $_help_min argument(s), got $#" >&2
    exit 2
fi
unset _help_arg _help_min
