# SPDX-License-Identifier: MIT
# gnuplot: bridge-added latency (p50/p99, both directions) and server CPU
# per call-second against concurrency. Variables: dir (data files
# <resampler>.dat), out (PNG path).
set terminal pngcairo size 1100,800 noenhanced font ",10"
set output out
set multiplot layout 2,1 title "voxbridge load bench"
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
unset multiplot
