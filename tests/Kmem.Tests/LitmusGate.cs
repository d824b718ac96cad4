namespace Kmem.Tests;

/// <summary>
/// A two-party spinning barrier for litmus tests: both threads leave each arrival within
/// a few nanoseconds of each other, so every round races anew. Each arrival is a full
/// fence (an interlocked increment), which orders nothing inside a round.
/// </summary>
internal sealed class LitmusGate
{
    private int _arrived;
    private int _generation;

    public void Arrive()
    {
        int generation = Volatile.Read(ref _generation);
        if (Interlocked.Increment(ref _arrived) == 2)
        {
            _arrived = 0;
            Interlocked.Increment(ref _generation);
            return;
        }
        while (Volatile.Read(ref _generation) == generation)
            Thread.SpinWait(1);
    }

    /// <summary>Spins about <paramref name="n"/> pause instructions: the skew that makes each round's interleaving differ.</summary>
    public static void Spin(int n)
    {
        for (int i = 0; i < n; i++)
            Thread.SpinWait(1);
    }
}
