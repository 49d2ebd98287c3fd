# Sourced by bench/records/reads.sh and bench/peers/vaccinations.sh: what the whole machine did
# during a run, from /proc/stat (all CPUs): the shares of user, system, idle, iowait and steal
# time (steal: the hypervisor ran another guest on our vCPU; this VM's 2 vCPUs are shared).
# cpustat_begin; ...run...; cpustat_end FILE  (prints one line and writes it to FILE)
cpustat_begin() { CPUSTAT0=$(head -1 /proc/stat); }
cpustat_end() {
    local now
    now=$(head -1 /proc/stat)
    awk -v a="$CPUSTAT0" -v b="$now" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ");
        for (i = 2; i <= n; i++) { d[i] = y[i] - x[i]; t += d[i] }
        if (t <= 0) t = 1;
        printf "machine during the run: user %.0f%%, system %.0f%%, idle %.0f%%, iowait %.0f%%, steal %.0f%% (of 2 vCPUs)\n",
            100 * (d[2] + d[3]) / t, 100 * (d[4] + d[7] + d[8]) / t, 100 * d[5] / t, 100 * d[6] / t, 100 * d[9] / t
    }' | tee "$1"
}
