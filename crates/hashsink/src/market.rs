//! `hashsink market --date YYYY-MM-DD [--json]`: one day of the Bitcoin market from the bundled
//! history, with the hashprice it implies.

use anyhow::Result;
use clap::Args;
use hashsink_market::MarketHistory;
use serde_json::json;

#[derive(Args, Debug, Clone)]
pub struct MarketArgs {
    /// The day (UTC), YYYY-MM-DD, within the bundled history (2015-01-01 .. 2026-03-22).
    #[arg(long)]
    pub date: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &MarketArgs) -> Result<String> {
    let history = MarketHistory::bundled();
    let d = history.day_str(&args.date)?;
    let height = history.height_at_start(d.date)?;
    let (next_halving, next_halving_date) = history.next_halving_after(d.date)?;
    if args.json {
        let v = json!({
            "date": d.date.to_string(),
            "price_usd": d.price_usd,
            "difficulty": d.difficulty,
            "hashrate_ehs": d.hashrate_ehs(),
            "fees_btc": d.fees_btc,
            "fee_share": d.fee_share(),
            "blocks": d.blocks,
            "subsidy_btc_per_block": d.subsidy_per_block_btc(),
            "block_height": height.round(),
            "next_halving_height": next_halving,
            "next_halving_date": next_halving_date.to_string(),
            "hashprice_usd_per_ph_day": d.hashprice_usd_per_ph_day(),
            "hashprice_btc_per_ph_day": d.hashprice_btc_per_ph_day(),
        });
        return Ok(format!("{}\n", serde_json::to_string_pretty(&v)?));
    }
    Ok(format!(
        "Bitcoin on {}\n  price                {:>14.2} USD\n  difficulty           {:>14.4e}\n  network hashrate     {:>14.1} EH/s\n  blocks               {:>14.0}\n  subsidy per block    {:>14.4} BTC\n  fees                 {:>14.4} BTC ({:.1} % of miner revenue)\n  hashprice            {:>14.2} USD per PH/s per day\n  hashprice            {:>14.8} BTC per PH/s per day\n  block height         {:>14.0} (start of day)\n  next halving         block {} about {} (at the last 30 days' pace)\nData: Coin Metrics, Inc. (community data), CC BY-NC 4.0.\n",
        d.date,
        d.price_usd,
        d.difficulty,
        d.hashrate_ehs(),
        d.blocks,
        d.subsidy_per_block_btc(),
        d.fees_btc,
        d.fee_share() * 100.0,
        d.hashprice_usd_per_ph_day(),
        d.hashprice_btc_per_ph_day(),
        height,
        next_halving,
        next_halving_date,
    ))
}
