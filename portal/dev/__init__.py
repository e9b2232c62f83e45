"""Development aids that are not the application: demo data and the benchmarks."""
