# SPDX-License-Identifier: MIT
# gnuplot: bridge-added latency (p50/p99, both directions), server CPU per
# call-second, and the server's wake-ups and system calls per media frame
# against concurrency. Variables: dir (data files <resampler>.dat), out
# (PNG path).
set terminal pngcairo size 1100,1100 noenhanced font ",10"
set output out
set multiplot layout 3,1 title "voxbridge load bench"
set logscale x
set xlabel "concurrent calls"
set grid
set key left top
set ylabel "added latency (ms, speexdsp)"
set logscale y
plot dir."/speexdsp.dat" using 1:2 with linespoints title "caller->Gemini p50", \
     ''                  using 1:3 with linespoints title "caller->Gemini p99", \
     ''                  using 1:4 with linespoints title "Gemini->caller p50", \
     ''                  using 1:5 with linespoints title "Gemini->caller p99"
unset logscale y
set ylabel "server CPU ms per call-second"
files = system("ls ".dir."/*.dat")
plot for [f in files] f using 1:6 with linespoints title system("basename ".f." .dat")
set ylabel "per media frame (in + out)"
set yrange [0:*]
# Syscall columns are -1 when perf was not available: not plotted.
plot for [f in files] f using 1:9 with linespoints \
         title "wake-ups, ".system("basename ".f." .dat"), \
     for [f in files] f using 1:($10 < 0 ? NaN : $10) with linespoints \
         title "syscalls, ".system("basename ".f." .dat")
unset multiplot
