using System.Reflection;
using System.Runtime.Loader;
// Loads two builds of the same harness (each with its own Kmem.dll) into two load
// contexts and times them in alternating chunks in one process: drift hits both alike.
string[] dirs = [args[0], args[1]];
string mode = args[2];
int rounds = int.Parse(args[3]);
long chunk = long.Parse(args[4]);
var runs = dirs.Select(d =>
{
    var alc = new Ctx(Path.Combine(d, "fph.dll"));
    Assembly a = alc.LoadFromAssemblyPath(Path.Combine(d, "fph.dll"));
    MethodInfo m = a.GetType("Loop")!.GetMethod("Run")!;
    return m.CreateDelegate<Func<string, long, double>>();
}).ToArray();
// Warm up as BenchmarkDotNet does: enough calls for tier-1 code with PGO, then time for the background JIT.
for (int pass = 0; pass < 3; pass++)
{
    for (int w = 0; w < 60; w++) foreach (var r in runs) r(mode, 20_000);
    Thread.Sleep(500);
}
for (int w = 0; w < 3; w++) foreach (var r in runs) r(mode, chunk);
var results = new List<double>[] { [], [] };
var ratios = new List<double>();
for (int i = 0; i < rounds; i++)
{
    double a = runs[0](mode, chunk), b = runs[1](mode, chunk);
    results[0].Add(a); results[1].Add(b); ratios.Add(b / a);
}
static double Median(List<double> l) { var s = l.OrderBy(x => x).ToList(); return s[s.Count / 2]; }
Console.WriteLine($"{mode}: A {Median(results[0]):F2} ns, B {Median(results[1]):F2} ns, B/A median {Median(ratios):F3} (min {ratios.Min():F3}, max {ratios.Max():F3}) over {rounds} rounds of {chunk:N0}");

sealed class Ctx(string main) : AssemblyLoadContext(isCollectible: false)
{
    private readonly AssemblyDependencyResolver _r = new(main);
    protected override Assembly? Load(AssemblyName name)
    {
        string? p = _r.ResolveAssemblyToPath(name);
        return p != null ? LoadFromAssemblyPath(p) : null;
    }
}
