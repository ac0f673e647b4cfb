"""The push stage (`distill push`): a trained student or a filtered dataset staged, carded and uploaded to the Hub."""
