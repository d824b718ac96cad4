using System.Buffers;
using System.Diagnostics.Metrics;
using System.Globalization;
using Kmem;

// The process the CLI tests attach `kmem top -p` and `kmem slabinfo -p` to:
//   Kmem.TargetApp CACHE_NAME OBJECTS [--exit-after SECONDS]
// creates a cache of that name (NoMerge: merged into another cache, it would be reported
// under that cache's name), allocates OBJECTS objects and keeps them, waits until the Kmem
// meter is published, prints "ready" and then waits until its standard input closes (or
// the seconds pass), so the test, not a timer, decides how long the caches stay observable.
// CACHE_NAME "-": no cache at all, so no Kmem meter (a .NET process that does not use Kmem).
if (args.Length is not (2 or 4) || !int.TryParse(args[1], CultureInfo.InvariantCulture, out int objects) || objects < 0
    || (args.Length == 4 && (args[2] != "--exit-after" || !double.TryParse(args[3], CultureInfo.InvariantCulture, out _))))
{
    Console.Error.WriteLine("usage: Kmem.TargetApp CACHE_NAME OBJECTS [--exit-after SECONDS]");
    return 2;
}

// The meter is created on the thread pool after the first cache (KmemMetrics.Activate);
// an attach before that would find no Kmem meter, so "ready" waits for it.
using var published = new ManualResetEventSlim();
using var listener = new MeterListener
{
    InstrumentPublished = (instrument, _) =>
    {
        if (instrument.Meter.Name == "Kmem")
            published.Set();
    },
};
listener.Start();

bool useKmem = args[0] != "-";
using SlabCache? cache = useKmem ? SlabCache.Create(args[0], 96, new SlabCacheOptions { Flags = SlabFlags.NoMerge }) : null;
var live = new List<nint>(objects);
unsafe
{
    for (int i = 0; cache is not null && i < objects; i++)
        live.Add((nint)cache.Alloc());
}
if (useKmem && !published.Wait(TimeSpan.FromSeconds(30)))
{
    Console.Error.WriteLine("the Kmem meter was not published within 30 s");
    return 1;
}
// Two event sources whose first use takes EventListenersLock in their static
// constructors, while a thread holding that lock for MetricsEventSource waits for them:
// .NET 10.0.12 deadlocks. ArrayPoolEventSource: a session's start formats strings (so
// rents from ArrayPool) under the lock (dotnet/runtime#119014). TplEventSource: the first
// CollectionStart event (a Start opcode) wakes the activity tracker, which reads it, on
// the collection thread that the shutdown's disable of MetricsEventSource joins under the
// lock (seen here as a target that never exited). A test attaches right after "ready" and
// may let the target exit right after its first collection; both are initialized first.
ArrayPool<char>.Shared.Return(ArrayPool<char>.Shared.Rent(16));
if (Type.GetType("System.Threading.Tasks.TplEventSource, System.Private.CoreLib") is { } tpl)
    System.Runtime.CompilerServices.RuntimeHelpers.RunClassConstructor(tpl.TypeHandle);
Console.WriteLine("ready");
Console.Out.Flush();

if (args.Length == 4)
{
    Thread.Sleep(TimeSpan.FromSeconds(double.Parse(args[3], CultureInfo.InvariantCulture)));
}
else
{
    // Returns when the test closes our stdin, or dies (the pipe's other end closes).
    Console.In.ReadToEnd();
}

unsafe
{
    foreach (nint p in live)
        cache!.Free((void*)p);
}
return 0;
