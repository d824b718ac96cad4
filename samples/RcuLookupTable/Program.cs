using System.Diagnostics;
using Kmem;
using Kmem.Samples;

// Readers look keys up with no lock while writers replace, remove and clear entries, freeing
// them at once into a TypesafeByRcu cache. Usage: dotnet run --project samples/RcuLookupTable [seconds]
double seconds = args.Length > 0 ? double.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 3;
using var table = new RcuLookupTable(capacity: 4096);
using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(seconds));
const int KeySpace = 16384;

var threads = new List<Thread>();
for (int r = 0; r < 2; r++)
{
    int seed = r;
    threads.Add(new Thread(() =>
    {
        var rng = new Random(seed);
        while (!stop.IsCancellationRequested)
            table.TryGet(rng.Next(1, KeySpace), out _);
    }));
}
for (int w = 0; w < 2; w++)
{
    int seed = 100 + w;
    threads.Add(new Thread(() =>
    {
        var rng = new Random(seed);
        for (long n = 0; !stop.IsCancellationRequested; n++)
        {
            long key = rng.Next(1, KeySpace);
            if ((n & 3) == 0)
                table.Remove(key);
            else
                table.Set(key, rng.NextInt64());
            if (seed == 100 && (n & 0xFFFF) == 0)
                table.Clear();   // empties slabs: their memory goes back after a grace period
        }
    }));
}
var clock = Stopwatch.StartNew();
threads.ForEach(t => t.Start());
threads.ForEach(t => t.Join());
clock.Stop();

// Everything out, then Shrink: it waits for one grace period and returns the slabs.
table.Clear();
table.Cache.Shrink();
SlabCacheStatistics s = table.Cache.GetStatistics();
RcuStatistics rcu = Rcu.GetStatistics();
Console.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: {table.Lookups:N0} lookups, {table.Hits:N0} hits, "
    + $"{table.IdentityChanged:N0} found another identity once locked, {table.Errors} errors");
Console.WriteLine($"cache '{table.Cache.Name}': {s.SlabsAllocated} slabs allocated, {s.SlabsAllocated - s.Slabs} returned after a grace period, "
    + $"{s.Slabs} held; {rcu.GracePeriods} grace periods");
return table.Errors == 0 ? 0 : 1;
