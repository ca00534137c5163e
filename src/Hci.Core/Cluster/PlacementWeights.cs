namespace Hci.Core.Cluster;

/// <summary>
/// The draw weights that make multi-replica rendezvous hashing place by weight. Picking the top
/// <c>r</c> straw2 draws is a race of exponential clocks (candidate i's clock runs at rate w_i; the first r to ring
/// win), whose inclusion probabilities are not proportional to the weights. This computes them by numerical
/// integration and adjusts the weights by fixed-point iteration until every candidate's inclusion probability matches
/// its target share (r x w_i / W, capped at 1).
/// </summary>
internal static class PlacementWeights
{
    private const int Intervals = 1024; // Simpson's rule over (0, 1): inclusion probabilities to ~1e-6
    private const int MaxIterations = 200;
    private const double Tolerance = 1e-4;

    public static double[] Adjust(IReadOnlyList<double> weights, int replicas)
    {
        int n = weights.Count;
        var targets = Targets(weights, replicas);
        var adjusted = weights.ToArray();
        for (int iteration = 0; iteration < MaxIterations; iteration++)
        {
            var p = InclusionProbabilities(adjusted, replicas);
            double worst = 0;
            for (int i = 0; i < n; i++)
            {
                if (targets[i] >= 1 && p[i] > 0.9999)
                {
                    continue; // a domain that must hold every extent, and does
                }

                worst = Math.Max(worst, Math.Abs((p[i] / targets[i]) - 1));
            }

            if (worst < Tolerance)
            {
                break;
            }

            for (int i = 0; i < n; i++)
            {
                adjusted[i] *= Math.Clamp(targets[i] / p[i], 0.25, 4);
            }

            double scale = weights.Sum() / adjusted.Sum();
            for (int i = 0; i < n; i++)
            {
                adjusted[i] *= scale;
            }
        }

        return adjusted;
    }

    /// <summary>Each candidate's target probability of holding a replica: r x w_i / W, where a candidate above 1 is
    /// capped at 1 and the rest shared by weight among the others.</summary>
    public static double[] Targets(IReadOnlyList<double> weights, int replicas)
    {
        int n = weights.Count;
        var targets = new double[n];
        var capped = new bool[n];
        while (true)
        {
            double free = replicas - capped.Count(c => c);
            double rest = 0;
            for (int i = 0; i < n; i++)
            {
                rest += capped[i] ? 0 : weights[i];
            }

            bool changed = false;
            for (int i = 0; i < n; i++)
            {
                if (capped[i])
                {
                    targets[i] = 1;
                    continue;
                }

                targets[i] = free * weights[i] / rest;
                if (targets[i] > 1)
                {
                    capped[i] = true;
                    changed = true;
                }
            }

            if (!changed)
            {
                return targets;
            }
        }
    }

    /// <summary>
    /// P(candidate i is among the first <paramref name="replicas"/> of independent exponential clocks with rates
    /// <paramref name="weights"/>) = integral over t of w_i e^(-w_i t) P(fewer than r others rang by t), with
    /// t = -ln(1 - v) / (W / r) mapping v in (0, 1) onto the time axis; the count of others uses prefix and suffix
    /// Poisson-binomial tables, so one time point costs O(n r^2).
    /// </summary>
    public static double[] InclusionProbabilities(IReadOnlyList<double> weights, int replicas)
    {
        int n = weights.Count;
        int r = replicas;
        double lambda = weights.Sum() / r;
        var p = new double[n];
        var prefix = new double[(n + 1) * r];
        var suffix = new double[(n + 1) * r];
        var rang = new double[n];
        for (int k = 0; k < Intervals; k++) // v = 1 (t infinite) contributes 0
        {
            double v = k / (double)Intervals;
            double t = -Math.Log(1 - v) / lambda;
            double jacobian = 1 / (lambda * (1 - v));
            double simpson = k == 0 ? 1 : (k % 2 == 1 ? 4 : 2);
            for (int j = 0; j < n; j++)
            {
                rang[j] = 1 - Math.Exp(-weights[j] * t);
            }

            Array.Clear(prefix);
            Array.Clear(suffix);
            prefix[0] = 1;
            for (int j = 0; j < n; j++)
            {
                for (int a = 0; a < r; a++)
                {
                    prefix[((j + 1) * r) + a] = (prefix[(j * r) + a] * (1 - rang[j])) + (a > 0 ? prefix[(j * r) + a - 1] * rang[j] : 0);
                }
            }

            suffix[n * r] = 1;
            for (int j = n - 1; j >= 0; j--)
            {
                for (int a = 0; a < r; a++)
                {
                    suffix[(j * r) + a] = (suffix[((j + 1) * r) + a] * (1 - rang[j])) + (a > 0 ? suffix[((j + 1) * r) + a - 1] * rang[j] : 0);
                }
            }

            for (int i = 0; i < n; i++)
            {
                double fewer = 0;
                for (int a = 0; a < r; a++)
                {
                    for (int b = 0; a + b < r; b++)
                    {
                        fewer += prefix[(i * r) + a] * suffix[((i + 1) * r) + b];
                    }
                }

                p[i] += simpson * weights[i] * Math.Exp(-weights[i] * t) * fewer * jacobian;
            }
        }

        double h = 1.0 / Intervals / 3;
        for (int i = 0; i < n; i++)
        {
            p[i] *= h;
        }

        return p;
    }
}
