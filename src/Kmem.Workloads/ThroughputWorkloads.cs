using System.Diagnostics;

namespace Kmem.Workloads;

/// <summary>One measured figure: operations per second of a named run.</summary>
public sealed record Measurement(string Workload, string Allocator, int Threads, double OpsPerSecond);

/// <summary>
/// Multi-threaded throughput: each thread allocates a few objects, writes them, and
/// frees them, in a loop, for a fixed time. One op is one alloc+free pair.
/// </summary>
public static unsafe class ThroughputWorkloads
{
    private const int Burst = 16;

    /// <summary>
    /// <paramref name="threads"/> threads, each doing bursts of alloc then free on the
    /// shared allocator, for <paramref name="duration"/>; returns pairs per second.
    /// </summary>
    public static Measurement Scaling(Allocator allocator, int threads, TimeSpan duration)
    {
        var (ops, seconds) = TimedThreads.Run(threads, duration, stop =>
        {
            var held = stackalloc nint[Burst];
            long n = 0;
            while (!stop.Requested)
            {
                for (int i = 0; i < Burst; i++)
                {
                    var p = (long*)allocator.Alloc();
                    *p = i;
                    held[i] = (nint)p;
                }
                for (int i = 0; i < Burst; i++)
                    allocator.Free((void*)held[i]);
                n += Burst;
            }
            return n;
        });
        return new Measurement("scaling", allocator.Name, threads, ops / seconds);
    }

    /// <summary>
    /// One thread allocates and writes objects, another checks and frees them, through
    /// a single-producer/single-consumer ring: every free is a remote free. Returns
    /// objects per second.
    /// </summary>
    public static Measurement ProducerConsumer(Allocator allocator, TimeSpan duration)
    {
        const int RingSize = 1 << 14;
        var ring = new nint[RingSize];
        long head = 0, tail = 0;   // head: next to write (producer); tail: next to read (consumer)
        bool stop = false;
        long consumed = 0;
        long corrupt = 0;
        var producer = new Thread(() =>
        {
            long h = 0;
            while (!Volatile.Read(ref stop))
            {
                if (h - Volatile.Read(ref tail) >= RingSize)
                {
                    Thread.SpinWait(8);
                    continue;
                }
                var p = (long*)allocator.Alloc();
                *p = h;
                ring[h & (RingSize - 1)] = (nint)p;
                Volatile.Write(ref head, ++h);
            }
        });
        var consumer = new Thread(() =>
        {
            long t = 0;
            while (true)
            {
                if (t == Volatile.Read(ref head))
                {
                    if (Volatile.Read(ref stop) && t == Volatile.Read(ref head))
                        break;
                    Thread.SpinWait(8);
                    continue;
                }
                var p = (long*)ring[t & (RingSize - 1)];
                if (*p != t)
                    corrupt++;
                allocator.Free(p);
                Volatile.Write(ref tail, ++t);
            }
            consumed = t;
        });
        var sw = Stopwatch.StartNew();
        producer.Start();
        consumer.Start();
        Thread.Sleep(duration);
        Volatile.Write(ref stop, true);
        producer.Join();
        consumer.Join();
        if (corrupt != 0)
            throw new InvalidOperationException($"{allocator.Name}: {corrupt} objects corrupted in transit");
        return new Measurement("producer-consumer", allocator.Name, 2, consumed / sw.Elapsed.TotalSeconds);
    }
}
